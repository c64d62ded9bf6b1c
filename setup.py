from setuptools import setup

setup(cffi_modules=["datapath/build.py:ffibuilder"])
