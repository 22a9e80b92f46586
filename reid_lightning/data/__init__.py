"""reid_lightning.data"""
