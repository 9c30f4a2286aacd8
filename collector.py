"""The garbage collector while the CLI starts and exits: paused while torch and Lightning import, idle at exit.

Importing torch and Lightning leaves about 630,000 objects that live until the process ends. The collector would
scan them again and again while they load, and once more, all of them, as the interpreter exits: 1.4 s of a 4 s
``python cli.py --help`` on 2 cores. ``cli.py`` imports this module first, which pauses the collector, and calls
:func:`resume` once its imports are done: what they made is frozen (left out of every later collection) and
collections go on as usual for everything made afterwards. At exit, after every other exit handler, whatever is
still alive is frozen too, so the interpreter's last collection has nothing to scan: each object is freed as its
last reference goes, as always, and no file is left unflushed (Lightning's logger and the report close theirs).
"""

import atexit
import gc

gc.disable()
atexit.register(gc.freeze)  # registered first, so it runs last


def resume() -> None:
    """Freeze what the imports made and turn the collector back on."""
    gc.freeze()
    gc.enable()
