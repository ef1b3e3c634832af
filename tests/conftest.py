"""Test setup: four fake CPU devices (before JAX initialises) and tiny-run helpers."""
import os

os.environ.setdefault('JAX_NUM_CPU_DEVICES', '4')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
