"""reid_lightning.metrics"""
