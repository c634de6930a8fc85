"""Tree verification: every node's logits equal a separate forward of its root-to-node path."""
import warnings

import torch

from spiffy.ar import DraftTree, branch_alternatives, rejection_scores
from tests.ar_fixtures import tiny_target

warnings.filterwarnings("ignore")


def test_tree_attention_matches_path_forwards():
    tgt = tiny_target()
    prefix = [3, 7, 11, 2, 9, 20]
    st = tgt.new_state()
    st.extend(prefix[:-1])
    tree = DraftTree()
    tree.add_chain(-1, [5, 6, 7, 8])           # nodes 0-3
    tree.add_chain(0, [9, 10])                 # 4-5: branch under node 0
    tree.add_chain(-1, [12, 13, 14])           # 6-8: branch at the root
    tree.add_chain(2, [15])                    # 9:   branch under node 2
    parents = [-1] + [p + 1 if p >= 0 else 0 for p in tree.parents]
    logits = st.extend_tree([prefix[-1]] + tree.tokens, parents)
    with torch.no_grad():
        full = tgt.model(torch.tensor([prefix])).logits[0, -1]
        assert torch.allclose(logits[0], full, atol=1e-10)
        for j in range(len(tree)):
            path = prefix + [tree.tokens[k] for k in tree.path_to(j)]
            ref = tgt.model(torch.tensor([path])).logits[0, -1]
            assert torch.allclose(logits[1 + j], ref, atol=1e-10), j
    # keeping one accepted path leaves a cache equal to a plain prefill of that path
    base = len(prefix) - 1
    st.keep(base, [0] + [1 + k for k in tree.path_to(5)])
    nxt = st.extend([42])[-1]
    path = prefix + [tree.tokens[k] for k in tree.path_to(5)] + [42]
    with torch.no_grad():
        assert torch.allclose(nxt, tgt.model(torch.tensor([path])).logits[0, -1], atol=1e-10)


def test_rejection_scores_and_branch_alternatives():
    c = torch.tensor([0.9, 0.8, 0.3, 0.95])
    r = rejection_scores(c)
    expect = [1 - 0.9, 0.9 * 0.2, 0.9 * 0.8 * 0.7, 0.9 * 0.8 * 0.3 * 0.05]
    assert torch.allclose(r, torch.tensor(expect, dtype=torch.float64))
    q = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.3, 0.0, 0.7], [0.95, 0.05, 0.0]])
    # positions 1 and 2 are the likeliest rejections; their runner-ups besides the drafted token
    assert branch_alternatives(c, q, [0, 0, 2, 0], 2) == [(1, 1), (2, 0)]
    assert branch_alternatives(c, q, [0, 0, 0, 0], 2) == [(1, 1), (2, 2)]
    assert branch_alternatives(c, torch.tensor([[1.0, 0.0, 0.0]] * 4), [0] * 4, 2) == []   # no other token


def test_tree_stops_after_eos():
    t = DraftTree()
    t.add_chain(-1, [1, 2, 62, 4], stop_ids={62})
    assert t.tokens == [1, 2, 62]
