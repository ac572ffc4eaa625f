"""The pure core: the flow file model, expansion into real steps, revisions,
reconciling, and every name flowrun gives. No Docker, no broker, no terminal."""
