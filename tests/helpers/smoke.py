"""Overrides for seconds-long runs of a task, shared by the in-process and the CLI tests."""

RESNET_SMOKE = (
    "task=resnet",
    "debug=smoke",
    "model.arch=resnet18",
    "model.weights=null",
    "data.image_size=32",
    "data.eval_batch_size=64",  # debug=smoke's 32 would leave the analyses 64 test images (2 batches)
    "callbacks.lesion_sweep.num_images=64",
    "callbacks.lesion_sweep.random_trials=2",
    "callbacks.depth_features.num_images=100",
    "callbacks.depth_features.projection=pca",
)
