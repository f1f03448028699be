#!/usr/bin/env bash
# ftlaunch under Open MPI: mpirun starts the processes, each reads its rank from OMPI_COMM_WORLD_*.
# One machine, 2 CPU ranks:
#   scripts/mpirun_example.sh
# Several machines: put "hostname slots=N" rows in a hostfile and name rank 0's host:
#   mpirun --hostfile hosts -np 16 --npernode 8 -x MASTER_ADDR=node01 -x MASTER_PORT=29500 \
#     build/bin/ftlaunch --config_file configs/deepspeed_config.yaml test
# Or let ftlaunch call mpirun: set deepspeed_multinode_launcher: openmpi and deepspeed_hostfile
# in the config, and run ftlaunch once on the first machine.
set -euo pipefail
cd "$(dirname "$0")/.."
extra=()
[ "$(id -u)" -eq 0 ] && extra+=(--allow-run-as-root)
exec mpirun -np 2 --oversubscribe "${extra[@]}" build/bin/ftlaunch --cpu test "$@"
