#!/usr/bin/env bash
# Under `mpirun -np 2` each process is a worker with OMPI's ranks; no ftlaunch launcher involved.
source "$(dirname "$0")/lib.sh"
command -v mpirun >/dev/null || { fail "mpirun not installed (scripts/setup.sh installs openmpi-bin)"; finish; }
port="$(free_port)"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_plm_rsh_agent=false
expect_exit 0 "ftlaunch test: 2 rank(s), backend cpu (mpirun)|All checks passed." -- \
  mpirun -np 2 --oversubscribe "$FTLAUNCH" --cpu --main_process_port "$port" test
expect_no_orphans "$port"
finish
