#!/bin/bash
# N two-process tiny runs of the source tree TREE (put first on PYTHONPATH; a copy, so that edits in
# the checkout do not reach the runs) while 2 busy processes load the machine; counts aborts.
#   git archive HEAD src | tar -x -C /tmp/tree && bash benchmarks/ddp_exit_loop.sh 30 now /tmp/tree
N=$1; TAG=$2; TREE=$3
FEXGAN=$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/fexgan
mkdir -p /tmp/ddpx && cd /tmp/ddpx
python3 -c "while True: pass" & B1=$!
python3 -c "while True: pass" & B2=$!
bad=0
for i in $(seq 1 $N); do
  rm -rf /tmp/ddpx/run_$TAG
  PYTHONPATH=$TREE/src OMP_NUM_THREADS=1 timeout 300 $FEXGAN train --preset tiny --set run.threads=1 --set logging.log_every=1 --quiet --out /tmp/ddpx/run_$TAG --nproc 2 --steps 4 > /tmp/ddpx/out_$TAG.txt 2>&1
  rc=$?
  if [ $rc -ne 0 ] || grep -qiE "SIGABRT|signal 6|terminate called|core dumped" /tmp/ddpx/out_$TAG.txt; then
    bad=$((bad+1)); cp /tmp/ddpx/out_$TAG.txt /tmp/ddpx/fail_${TAG}_$i.txt
  fi
  echo "$TAG run $i rc=$rc"
done
kill $B1 $B2
echo "$TAG: $bad of $N failed"
