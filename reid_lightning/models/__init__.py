"""reid_lightning.models"""
