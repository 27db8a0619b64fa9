"""Helpers shared by the tests: real trainer processes, event files, the app's fixtures."""
