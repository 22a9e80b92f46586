"""reid_lightning.inference"""
