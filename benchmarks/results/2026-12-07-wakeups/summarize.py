import re,sys,glob,statistics as st,os
d=sys.argv[1]
rows={}
for f in sorted(glob.glob(d+'/*-[0-9].log')):
    b=os.path.basename(f).rsplit('-',1)[0]
    t=open(f).read()
    warm=re.search(r'throughput: (\d+) commits/s',t)
    fs=[int(x) for x in re.findall(r'fdatasync: n=\d+ p50=(\d+)',t)]
    rt=[int(x) for x in re.findall(r'admin Status\): n=\d+ p50=(\d+)',t)]
    cm=re.findall(r'1 writer\(s\), durability Quorum: n=\d+ p50=(\d+)µs p90=(\d+)µs p99=(\d+)µs',t)
    tp=[int(x) for x in re.findall(r'throughput: (\d+) commits/s',t)][1:]
    for i,(p50,p90,p99) in enumerate(cm):
        rows.setdefault(b,[]).append((int(p50),int(p99),fs[i]+rt[i],tp[i],int(warm.group(1))))
    print(os.path.basename(f), 'warm16w', warm.group(1), 'meas', [(c[0],c[2],round(int(c[0])/(fs[i]+rt[i]),2)) for i,c in enumerate(cm)])
for b,r in rows.items():
    print(b, 'median p50', st.median(x[0] for x in r), 'p99', st.median(x[1] for x in r), 'ratio', round(st.median(x[0]/x[2] for x in r),2), '1w/s', st.median(x[3] for x in r), '16w/s', st.median(x[4] for x in r))
