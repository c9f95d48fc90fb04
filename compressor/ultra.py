"""The one door to Ultralytics (an optional extra, AGPL-3.0): it is imported here, with the
environment that keeps it off the network and out of the user's home, or a one-line error."""

import os
import tempfile
from pathlib import Path

from compressor.errors import CompressorError

_SETTINGS = Path(tempfile.gettempdir()) / "compressor-ultralytics"


def require(what: str = "detection"):
    """The `ultralytics` module. It must never reach the network (it checks connectivity, fetches a
    font and offers updates), nor write settings under ~/.config, nor log every model it builds."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    os.environ.setdefault("YOLO_AUTOINSTALL", "False")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(_SETTINGS))
    from PIL import Image

    pil_open = Image.open
    omp_threads = os.environ.get("OMP_NUM_THREADS")
    try:
        import ultralytics
        import ultralytics.utils.patches  # noqa: F401  (swaps PIL's open when first imported)
    except ImportError:
        raise CompressorError(f"{what} needs Ultralytics, an optional extra: pip install -e \".[detect]\" "
                              "(or pip install ultralytics-opencv-headless)") from None
    finally:
        # Its patches module swaps PIL's open for one that installs a HEIF plugin on any image PIL
        # cannot identify, anywhere in the process, which then reports a missing pi_heif instead.
        Image.open = pil_open
        # Its import also sets OMP_NUM_THREADS=1 where unset, which would make every later run
        # in the process take one thread (compressor.process reads it).
        if omp_threads is None:
            os.environ.pop("OMP_NUM_THREADS", None)
    return ultralytics
