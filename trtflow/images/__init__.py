"""Images and datasets (numpy + Pillow): preprocessing, scenes, labelled sets, augmentation."""
