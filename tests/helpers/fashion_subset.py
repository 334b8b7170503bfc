"""data=fashion_mnist, the first `limit` images of each split only: the in-memory side of the
folder-vs-memory comparison on the images scripts/fashion_mnist_folder.py --limit writes out."""

from datamodules import FashionMNISTDataModule


class FashionMNISTFirst(FashionMNISTDataModule):
    def __init__(self, *args, limit: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.limit = limit

    def setup(self, stage=None):
        if self.splits:
            return
        super().setup(stage)
        if self.limit is not None:
            self.splits = {k: s.subset(slice(0, self.limit)) for k, s in self.splits.items()}
