#!/usr/bin/env python3
"""RMU probe on SmolLM2 in PyTorch (issue 8, session 4): the same loss as `intervene rmu`
(mse(h_l(forget), c u) + alpha * mse(h_l(retain), h_l^frozen(retain)), documents run one by one
without padding, AdamW eps 1e-6 no decay, forward truncated at layer l) plus a quick cloze MC
check on the first N facts questions, to try settings faster than the full bench.

Not a golden: its direction u is torch.rand with seed 0 (not the tool's SplitMix64 draw), so
losses after step 0 differ from the binary's in detail; step 0's forget loss is the same
(567.5 here, 567.3 from `intervene rmu`, bench/RESULTS.md).

Requirements: /opt/pyref/bin/python with torch and transformers (pip install torch
transformers). Run from the repository root with models/smollm2 present:

    nice -n 19 /opt/pyref/bin/python bench/rmu_probe.py --lr 1e-3 --alpha 1200 --steps 50 --n 30

--skip0 K drops the first K positions of every document from both MSEs (the attention-sink
position, hypothesis 1 of session 4); --pack P joins P consecutive statements into one
document; --fixed 1 trains on forget/retain batch 0 only (to see how far the loss can move).
"""
import json, sys, time, argparse, copy, torch
from transformers import AutoTokenizer, LlamaForCausalLM
torch.set_num_threads(1)
p=argparse.ArgumentParser()
p.add_argument('--layer',type=int,default=7); p.add_argument('--upd',default='')
p.add_argument('--scale',type=float,default=4.0); p.add_argument('--coef',type=float,default=0)
p.add_argument('--alpha',type=float,default=1200); p.add_argument('--lr',type=float,default=1e-3)
p.add_argument('--steps',type=int,default=50); p.add_argument('--bs',type=int,default=4)
p.add_argument('--skip0',type=int,default=0)  # exclude first k positions of each window from both MSEs
p.add_argument('--pack',type=int,default=1)   # statements per window
p.add_argument('--fixed',type=int,default=0); p.add_argument('--every',type=int,default=10)
p.add_argument('--module',default='down_proj'); p.add_argument('--n',type=int,default=50)
a=p.parse_args()
M='models/smollm2'; F='data/facts/'
tok=AutoTokenizer.from_pretrained(M)
m=LlamaForCausalLM.from_pretrained(M,torch_dtype=torch.float32).eval()
def docs(f):
    t=[json.loads(l)['text'] for l in open(F+f)]
    return [tok(' '.join(t[i:i+a.pack])).input_ids for i in range(0,len(t),a.pack)]
fo,re_=docs('forget_text.jsonl'),docs('retain_text.jsonl')
def mc(f,n):
    qs=[json.loads(l) for l in open(F+f)][:n]; ok=0
    with torch.no_grad():
        for q in qs:
            ctx=tok(q['question'].strip()).input_ids; sc=[]
            for c in q['choices']:
                full=tok(q['question'].strip()+' '+c).input_ids
                lp=torch.log_softmax(m(torch.tensor([full])).logits[0],-1)
                sc.append(sum(lp[i-1,full[i]].item() for i in range(len(ctx),len(full))))
            ok+= int(max(range(4),key=lambda i:sc[i])==q['answer'])
    return ok/len(qs)
def hid(model,ids):  # output of layer a.layer (truncated base model, final norm removed)
    return model.model(torch.tensor([ids])).last_hidden_state[0]
L=a.layer; upd=[int(x) for x in a.upd.split(',')] if a.upd else [L-2,L-1,L]
# truncated copy to speed: keep layers 0..L
frozen=copy.deepcopy(m); frozen.model.layers=frozen.model.layers[:L+1]
work=copy.deepcopy(m); work.model.layers=work.model.layers[:L+1]
frozen.model.norm=torch.nn.Identity(); work.model.norm=torch.nn.Identity()
for q in work.parameters(): q.requires_grad=False
params=[]
for l in upd:
    mod=work.model.layers[l].mlp if a.module in('down_proj','up_proj','gate_proj') else work.model.layers[l].self_attn
    w=getattr(mod,a.module).weight; w.requires_grad=True; params.append(w)
with torch.no_grad():
    hs=torch.cat([hid(frozen,d) for d in fo[:a.bs]]); med=hs.norm(dim=-1).median().item()
c=a.coef if a.coef>0 else a.scale*med
g=torch.Generator().manual_seed(0); u=torch.rand(576,generator=g); u=u/u.norm()*c
opt=torch.optim.AdamW(params,lr=a.lr,eps=1e-6,weight_decay=0)
print(f'median norm {med:.1f} c {c:.1f}',flush=True)
t0=time.time()
for t in range(a.steps):
    i=0 if a.fixed else t% (len(fo)//a.bs)
    fb=fo[i*a.bs:(i+1)*a.bs]; rb=re_[i*a.bs:(i+1)*a.bs]
    opt.zero_grad()
    hf=torch.cat([hid(work,d)[a.skip0:] for d in fb])
    lf=((hf-u)**2).mean()
    hr=torch.cat([hid(work,d)[a.skip0:] for d in rb])
    with torch.no_grad(): hr0=torch.cat([hid(frozen,d)[a.skip0:] for d in rb])
    lr_=((hr-hr0)**2).mean()
    (lf+a.alpha*lr_).backward(); opt.step()
    if t%a.every==0 or t==a.steps-1: print(t,f'forget {lf.item():.2f} retain {lr_.item():.4f}',flush=True)
# copy weights back into full model
with torch.no_grad():
    for l in upd:
        mod=m.model.layers[l].mlp if a.module in('down_proj','up_proj','gate_proj') else m.model.layers[l].self_attn
        src=work.model.layers[l].mlp if a.module in('down_proj','up_proj','gate_proj') else work.model.layers[l].self_attn
        getattr(mod,a.module).weight.copy_(getattr(src,a.module).weight)
print(f'train {time.time()-t0:.0f}s', vars(a))
if a.n: print('forgetMC',mc('forget_mc.jsonl',a.n),'retainMC',mc('retain_mc.jsonl',a.n),flush=True)
