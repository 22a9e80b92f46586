"""reid_lightning.similarity"""
