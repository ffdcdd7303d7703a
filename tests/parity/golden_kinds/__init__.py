"""One module per golden kind; each has produce(case) -> {output name: tensor} and tolerance(name, golden)."""

from . import ddim, modules, schedule, t2v_turbo, text, unet, vae

KINDS = {
    "unet_forward": unet,
    "module_forward": modules,
    "diffusion_schedule": schedule,
    "ddim_sampling": ddim,
    "first_stage_vae": vae,
    "text_encoder": text,
    "t2v_turbo_sampling": t2v_turbo,
}
