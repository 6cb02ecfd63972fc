#!/usr/bin/env bash
# The CPU long run of docs/results.md ("Long run"): MIPAE and DRNET on Moving
# dSprites (fixed), batch 16, side by side at low priority; rerun to resume.
cd "$(dirname "$0")/.."
export GLIBC_TUNABLES=glibc.malloc.hugetlb=1
PY=.venv/bin/python
nice -n 19 $PY -m mipae_jax.main --config=configs/mipae_dsprites.py:long_cpu --workdir=workdir_long/mipae --mode=prepare > workdir_long/prepare.log 2>&1
nice -n 19 $PY -m mipae_jax.main --config=configs/mipae_dsprites.py:long_cpu --workdir=workdir_long/mipae > workdir_long/mipae.log 2>&1 &
nice -n 19 $PY -m mipae_jax.main --config=configs/drnet_dsprites.py:long_cpu --workdir=workdir_long/drnet > workdir_long/drnet.log 2>&1 &
wait
