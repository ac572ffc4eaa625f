import gc
import signal
import sys

# A SIGTERM during the imports below (the first 0.1 s) waits, blocked, and is taken
# once the handler is in place (stop_on_signals unblocks it): the step stops as it
# would later, exit 0, not killed mid-import. (Were the sailor its container's
# process 1, without Docker's init, the kernel would drop it instead.)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})

# A step's start is mostly imports, and every step of a flow starts at once: no
# collection of cycles while they load (a tenth of the time). The sailor turns it
# on again once the function is loaded (Sailor.run).
gc.disable()

from .runtime import main  # noqa: E402

sys.exit(main())
