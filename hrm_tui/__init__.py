"""hrm-tui: the terminal app. Never imports torch (it talks to trainers through run directories)."""
