"""Bundled gymnastic-vault plugin: the AQA-7 dataset adapter and the procedural vault renderer."""
