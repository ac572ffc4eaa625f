"""WRONG: a new listener (here a thread) on every process() call.

In a real-time flow process() is called again and again, so listeners pile up,
each handling the same events. flowrun's sailor notices and warns.
"""

import threading

stop = threading.Event()


def process(msg, cfg, snapshot, ctx):
    listener = threading.Thread(target=stop.wait, daemon=True)
    listener.start()
