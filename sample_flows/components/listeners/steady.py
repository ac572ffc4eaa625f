"""RIGHT: the listener is created once and reused by every process() call."""

import threading

listener = None
stop = threading.Event()


def process(msg, cfg, snapshot, ctx):
    global listener
    if listener is None:
        listener = threading.Thread(target=stop.wait, daemon=True)
        listener.start()
