"""Rendering: warm-up progress (TTY, plain, JSON), plans and status. Only this prints."""
