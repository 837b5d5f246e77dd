"""image workflows: img2img, inpaint, outpaint, hires fix and upscale parameters on jobs

All columns are nullable: jobs of earlier versions had none of these workflows.
"""

import sqlalchemy as sa

from migrations.steps import added_columns

revision = "0002"
down_revision = "0001"

COLUMNS = (
    ("init_image_path", sa.Text()),
    ("denoising_strength", sa.Float()),
    ("resize_mode", sa.String(length=20)),
    ("loopback_count", sa.Integer()),
    ("loopback_final_strength", sa.Float()),
    ("mask_path", sa.Text()),
    ("mask_blur", sa.Integer()),
    ("masked_content", sa.String(length=20)),
    ("inpaint_only_masked", sa.Boolean()),
    ("inpaint_padding", sa.Integer()),
    ("outpaint_left", sa.Integer()),
    ("outpaint_right", sa.Integer()),
    ("outpaint_top", sa.Integer()),
    ("outpaint_bottom", sa.Integer()),
    ("hires_scale", sa.Float()),
    ("hires_steps", sa.Integer()),
    ("hires_denoising", sa.Float()),
    ("hires_upscaler", sa.String(length=100)),
    ("upscale_factor", sa.Float()),
    ("upscaler", sa.String(length=100)),
)

upgrade, downgrade = added_columns({"jobs": [sa.Column(name, type_, nullable=True) for name, type_ in COLUMNS]})
