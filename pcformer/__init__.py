"""pcformer"""
