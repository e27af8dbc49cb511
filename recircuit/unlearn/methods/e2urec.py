"""E2URec: dual-teacher distillation (remembering teacher = original; forgetting teacher from an augmented model)."""

import copy

import torch

from recircuit.unlearn.base import UnlearnMethod, register
from recircuit.unlearn.objectives import answer_forward, e2urec_forget_teacher, kl_yes_no


@register("e2urec")
class E2URec(UnlearnMethod):
    """``beta * KL(original || model) on retain + (1 - beta) * KL(forget teacher || model) on forget``.

    The augmented model is the original further tuned on the forget set (``e2urec_aug_steps``
    steps of answer CE); the forgetting teacher's logits are ``z_orig - alpha * relu(z_aug - z_orig)``.
    E2URec trains LoRA adapters; here the same objective moves the attention/MLP projections.
    """

    def setup(self, model, original, forget, retain, config):
        params = super().setup(model, original, forget, retain, config)
        self.aug = copy.deepcopy(original)
        aug_params = [p for p in self.aug.parameters()]
        for p in aug_params:
            p.requires_grad_(True)
        opt = torch.optim.Adam(aug_params, lr=config.e2urec_aug_lr)
        g = torch.Generator().manual_seed(config.seed)
        for _ in range(config.e2urec_aug_steps):
            idx = torch.randperm(len(forget), generator=g)[: config.batch_size].tolist()
            ce, _ = answer_forward(self.aug, [forget[i] for i in idx])
            opt.zero_grad()
            ce.mean().backward()
            opt.step()
        for p in aug_params:
            p.requires_grad_(False)
        self.aug.eval()
        return params

    def gradients(self, model, original, f_batch, r_batch, config):
        with torch.no_grad():
            _, z_orig_f = answer_forward(original, f_batch)
            _, z_aug_f = answer_forward(self.aug, f_batch)
            _, z_orig_r = answer_forward(original, r_batch)
        teacher = e2urec_forget_teacher(z_orig_f, z_aug_f, config.e2urec_alpha)
        _, zf = answer_forward(model, f_batch)
        _, zr = answer_forward(model, r_batch)
        l_fgt, l_rem = kl_yes_no(zf, teacher), kl_yes_no(zr, z_orig_r)
        (config.e2urec_beta * l_rem + (1 - config.e2urec_beta) * l_fgt).backward()
        return {"forget": float(l_fgt.detach()), "retain": float(l_rem.detach())}
