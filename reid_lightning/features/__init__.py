"""reid_lightning.features"""
