# Summarises `perf script -F comm,tid,ip,sym` output of the checkpoint bench: the samples taken
# inside the timed `Checkpointed` apply (stacks through `Feeder::apply` but not `history`), and
# the share of them under each frame. Usage: python3 fold.py SCRIPT_OUTPUT
import collections,sys
stacks=[];cur=None
for line in open(sys.argv[1]):
    line=line.rstrip('\n')
    if not line.strip():
        if cur: stacks.append(cur); cur=None
        continue
    if line[0] not in ' \t':
        cur=[line]
    else:
        parts=line.strip().split(' ',1)
        cur.append(parts[1] if len(parts)>1 else parts[0])
if cur: stacks.append(cur)
sel=[s for s in stacks if any('Feeder>::apply' in f or 'Feeder::apply' in f for f in s) and not any('history' in f for f in s)]
print('total',len(stacks),'checkpoint-apply samples',len(sel))
inc=collections.Counter()
for s in sel:
    seen=set()
    for f in s[1:]:
        if f not in seen: inc[f]+=1; seen.add(f)
for k,v in inc.most_common(70):
    print(f"{v:5d} {100*v/len(sel):5.1f}% {k[:150]}")
