"""reid_lightning.retrieval"""
