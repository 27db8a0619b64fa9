"""Trainer components. This __init__ imports nothing: the app imports some of these modules
(config, events, control, sysmon) and must not pull torch in through the package."""
