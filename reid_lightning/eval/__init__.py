"""reid_lightning.eval"""
