import re,sys,statistics,collections
d=collections.defaultdict(list)
for line in open(sys.argv[1]):
    m=re.match(r"round (\d+) (?:bin|inflight) (\S+) writers (\d+):.*p50=(\d+)µs.*p99=(\d+)µs.*throughput: (\d+) commits/s",line)
    if m:
        r,b,w,p50,p99,tp=m.groups(); d[(b,int(w))].append((int(p50),int(p99),int(tp)))
for (b,w),v in sorted(d.items(), key=lambda x:(x[0][1],x[0][0])):
    print(f"{b:8} {w:3}w p50 {statistics.median(x[0] for x in v):7.0f} p99 {statistics.median(x[1] for x in v):7.0f} tput {statistics.median(x[2] for x in v):6.0f}  n={len(v)}")
