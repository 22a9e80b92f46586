"""reid_lightning.callbacks"""
