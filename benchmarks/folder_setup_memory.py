"""What data=folder holds per image: Python memory (tracemalloc) after `setup()` of a folder (its
file list), the peak while scanning it, and one pass's order.

    python benchmarks/folder_setup_memory.py DIR
"""

import sys
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import compose  # noqa: E402
from hydra.utils import instantiate  # noqa: E402

dm = instantiate(compose("data=folder").data, root=sys.argv[1], image_size=32, num_workers=0, _convert_="all")
tracemalloc.start()
dm.setup()
current, peak = tracemalloc.get_traced_memory()
splits = {id(d): d for d in dm.datasets.values()}.values()  # test may be val itself
held = sum(d.paths.nbytes + d.labels.nbytes for d in splits)
n = sum(len(d) for d in splits)
dm.train_dataloader().batches(0)
after, _ = tracemalloc.get_traced_memory()
print(
    f"{sys.argv[1]}: {n} images; held after setup {current / 1e6:.2f} MB (file list arrays {held / 1e6:.2f} MB), "
    f"peak during setup {peak / 1e6:.2f} MB; one pass's order {(after - current) / 1e6:.2f} MB"
)
