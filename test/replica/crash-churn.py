# Random changes through a mount, for test/replica/crash.ts: python3 crash-churn.py ROOT SEED COUNT.
# Errors are expected (the daemon is killed under it) and ignored.
import os, random, sys, time
root = sys.argv[1]; seed = int(sys.argv[2]); n = int(sys.argv[3])
rnd = random.Random(seed)
def p(*a): return os.path.join(root, *a)
for i in range(n):
    try:
        k = rnd.randrange(8); f = 'f%d' % rnd.randrange(60); d = 'd%d' % rnd.randrange(6)
        if k == 0: os.makedirs(p(d), exist_ok=True)
        elif k == 1:
            with open(p(f), 'wb') as fh: fh.write(os.urandom(rnd.randrange(1, 70000)))
        elif k == 2:
            with open(p(f), 'ab') as fh: fh.write(b'x' * rnd.randrange(1, 5000))
        elif k == 3: os.rename(p(f), p('f%d' % rnd.randrange(60)))
        elif k == 4: os.unlink(p(f))
        elif k == 5:
            os.makedirs(p(d), exist_ok=True); os.rename(p(f), p(d, f))
        elif k == 6: os.chmod(p(f), rnd.choice([0o600, 0o644, 0o755]))
        elif k == 7: os.utime(p(f), (rnd.randrange(10**9), rnd.randrange(10**9)))
    except OSError:
        pass
