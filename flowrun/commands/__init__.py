"""What the CLI's commands do beyond one call: status, logs, down."""
