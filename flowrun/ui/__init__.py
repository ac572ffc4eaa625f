"""`flowrun ui`: a live page of every running flow, served on loopback."""
