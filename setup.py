from setuptools import find_packages, setup

setup(
    name="dcjax",
    version="0.1.0",
    description="Deep clustering in JAX: DEC, IDEC, DCN, DKM vmapped across seeds, "
                "a checkpoint every epoch, label-free epoch selection.",
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["dcjax", "dcjax.*"]),
    # The study's assessor as arrays (dcjax/shipped_assessor.py), so that
    # `python -m dcjax.select` works from an installed package.
    package_data={"dcjax": ["assessors/*.npz"]},
    python_requires=">=3.11",
    install_requires=[
        "jax>=0.6",
        "flax>=0.10",
        "optax>=0.2",
        "orbax-checkpoint>=0.11",
        "scikit-learn>=1.4",
        "scipy>=1.11",
        "numpy>=1.26",
        "ml-collections>=0.1.1",
        "absl-py>=2.0",
        "tqdm>=4.60",
        "pandas>=2",
        "filelock>=3.12",   # the workdir lock, portable (fcntl is POSIX only)
        "ruptures>=1.1",   # change points of loss curves (epoch selection)
        "diptest>=0.8",    # Hartigan's dip test: ACE's admissible embedding spaces (epoch selection)
        "matplotlib>=3.7",  # the run report (dcjax.report) and the notebook
    ],
    extras_require={
        "tfds": ["tensorflow-datasets>=4.9,<5"],
        "test": ["pytest>=7", "nbformat>=5", "nbclient>=0.7", "ipykernel>=6", "matplotlib>=3.7"],
        "study": ["matplotlib>=3.7"],
        "umap": ["umap-learn>=0.5"],   # UMAP views in the run report (dcjax.report), besides PCA
    },
)
