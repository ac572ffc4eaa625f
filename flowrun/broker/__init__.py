"""The broker: its container, each flow's vhost, users and topology, and sending
into or tapping out of a running flow."""
