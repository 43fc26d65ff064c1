"""Imported relatively by model.py."""


def double(values):
    return values * 2
