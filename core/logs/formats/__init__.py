"""logs/formats"""
