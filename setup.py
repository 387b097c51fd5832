"""Install equihash and build its Cython extensions (the inverted-index core, the keyed normals).

torch is required as ``torch>=2.1``: on a CPU machine install the CPU build first
(``pip install torch==2.13.0`` here, or ``--index-url .../whl/cpu``); on a GPU machine
install the CUDA build of your choice first. pip then keeps the torch it finds.
"""

from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup

extensions = [
    Extension(
        "equihash.index._core",
        ["equihash/index/_core.pyx"],
        include_dirs=[np.get_include()],
        extra_compile_args=["-O3"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    ),
    Extension(
        "equihash.data._keyed",
        ["equihash/data/_keyed.pyx"],
        include_dirs=[np.get_include()],
        # numpy's compiled samplers (random_standard_normal_f), a static library numpy ships
        library_dirs=[str(Path(np.random.__file__).parent / "lib")],
        libraries=["npyrandom", "m"],
        extra_compile_args=["-O3"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    ),
]

setup(
    name="equihash",
    version="0.1.0",
    description="Learning deep equihash functions: a reproducible Snakemake pipeline",
    packages=find_packages(include=["equihash", "equihash.*"]),
    package_data={"equihash": ["pretrained/*.tar"]},  # the built-in models (pretrained: builtin:NAME)
    ext_modules=cythonize(extensions, language_level=3),
    python_requires=">=3.10",
    install_requires=[
        "numpy>=2.0",
        "torch>=2.1",
        "h5py>=3.8",
        "pandas>=2.0",
        "pyarrow>=14",
        "snakemake>=8.0",
        "tqdm>=4.60",
        "pyyaml>=6.0",
        "mlxtend>=0.23",
        "jsonschema>=4.0",
        "matplotlib>=3.7",
        "pillow>=10.0",
        # snakemake --report needs it
        "pygments>=2.10",
        # its wheel embeds the photographs of the default OpenImagesMosaic bank
        "scikit-image>=0.22",
        # the perceptual-hash baselines (equihash.nn.perceptual): pHash, dHash, aHash, wHash; PDQ
        "imagehash>=4.3",
        "pdqhash>=0.2.8",
    ],
    extras_require={
        # Snakemake's SLURM executor (snakemake --profile workflow/profiles/slurm)
        "slurm": ["snakemake-executor-plugin-slurm>=2.8"],
        # tests/test_slurm.py submits the tiny workflow to a live SLURM cluster
        "test": ["pytest>=7", "snakemake-executor-plugin-slurm>=2.8"],
    },
    entry_points={"console_scripts": ["equihash=equihash.cli:main"]},
)
