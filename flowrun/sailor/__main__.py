import gc
import sys

# A step's start is mostly imports, and every step of a flow starts at once: no
# collection of cycles while they load (a tenth of the time). The sailor turns it
# on again once the function is loaded (Sailor.run).
gc.disable()

from .runtime import main  # noqa: E402

sys.exit(main())
