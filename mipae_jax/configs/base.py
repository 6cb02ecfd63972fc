"""Base configuration shared by every MIPAE / DRNET experiment, and its variants.

Not launched directly: each `configs/{mipae,drnet}_{mnist,dsprites,mpi3d}.py`
imports `get_base_config()`, overrides what differs and ends with
`apply_variant(config, arg)`. Defaults are the paper's (Sec. IV-A) and the
authors' reference implementation's.

Variants, the `:ARG` of `--config=configs/mipae_dsprites.py:ARG` (`VARIANTS`);
none keeps the paper's settings. Architectures, losses and optimisers stay
the paper's in every variant:
  reduced   the `python -m mipae_jax.main --mode=reproduce` runs: same
            data, batch 16, 6,000 main and 1,200 LSTM steps, 500 test
            sequences, MIG on 20k frames, LPIPS alex only (about 1.5 hours
            for both methods on a 2-core CPU; mipae_jax/experiments/paper.py,
            REDUCED_RATIONALE).
  smoke     the quickstart (`--mode=reproduce`: 8.7 min for MIPAE alone,
            17.5 min for both methods on an idle 2-core CPU): the small
            embedded dataset's fresh videos, batch 16, 600 main and 200 LSTM steps, 10 predicted
            frames of 32 test sequences, MIG on 2 x 1,000 frames, LPIPS alex;
            videos of the paper's length (15 frames, 5 + 10 for the LSTM).
  tiny      seconds per stage, for the tests and `--scale=tiny`: the small
            dataset's stored videos, their first 6 frames, batch 8, 4 steps per stage, an LSTM
            on 3 + 4 frames, 3 predicted frames of 8 test sequences, MIG on
            200 frames, LPIPS alex only.
  long_cpu  the CPU long run (docs/results.md, "Long run"): the paper's
            steps at batch 16, checkpoints every 500 steps (40 kept).
  accelerator
            the paper's settings at accelerator speed: stored train videos
            held on the devices, 10 steps per jitted call.
  device_check
            launch/device_check.sh on one accelerator: batch 100 on 2,000
            stored videos held on the device, 10 steps per call, stopped
            by the script's clock; `device_check_smoke` is its CPU test.
"""

from collections.abc import Callable

import ml_collections

# Changes a paper config in place into a variant, and returns it.
Variant = Callable[[ml_collections.ConfigDict], ml_collections.ConfigDict]


def get_base_config() -> ml_collections.ConfigDict:
  """Returns the fields every experiment has, at the paper's values."""
  config = ml_collections.ConfigDict()

  # "mipae" (eq. 5: recon + alpha sim + beta MI) or "drnet" (adversarial).
  config.method = "mipae"
  # Seed of parameter init, of k / pair sampling, and of data order.
  config.seed = 0

  config.dataset = ml_collections.ConfigDict()
  # Registered TFDS name: moving_mnist, moving_dsprites or moving_mpi3d.
  config.dataset.name = "moving_dsprites"
  # TFDS BuilderConfig of that dataset (see mipae_jax/datasets/).
  config.dataset.builder_config = "fixed"
  # Where TFDS keeps prepared data; None means TFDS's default directory.
  config.dataset.data_dir = ml_collections.config_dict.placeholder(str)
  # Directory holding source files (MNIST idx, dSprites / MPI3D .npz).
  config.dataset.manual_dir = ml_collections.config_dict.placeholder(str)
  # Build the dataset on first use when it is not prepared yet.
  config.dataset.prepare = True
  # Frames of each training video the main network samples x^t, x^{t+k}
  # from: C + T = 5 + 10 in the reference.
  config.dataset.num_frames = 15
  # Train on videos rendered fresh, never repeated (as the authors' loaders
  # draw them), instead of cycling over the builder's stored num_train
  # videos; the first num_train of the stream are the stored ones. Test
  # videos stay stored. MNIST / MPI3D read their source files from manual_dir.
  config.dataset.fresh_train_videos = False
  # Where training batches come from: "host" (the grain pipeline, shipped to
  # the devices every step) or "device" (the stored train videos put on the
  # devices once and gathered inside the step; mipae_jax/device_data.py).
  config.dataset.placement = "host"
  # With placement "device": the share of each device's free memory the
  # stored videos may take (the rest is left to the step).
  config.dataset.device_memory_fraction = 0.5

  config.model = ml_collections.ConfigDict()
  # "dcgan" (Moving MNIST / dSprites) or "vgg_resnet" (MPI3D, Sec. IV-A).
  config.model.arch = "dcgan"
  # |z_c|, content code size: 128 in the paper.
  config.model.content_dim = 128
  # |z_p|, pose code size: 5 (DCGAN datasets), 10 (MPI3D).
  config.model.pose_dim = 5
  # U-Net skips from the content encoder into the decoder.
  config.model.skip_connections = False
  # Convolution implementation (models/layers.py): "plain" (nn.Conv /
  # nn.ConvTranspose), "fast" (reformulations quick on XLA CPU, equal up to
  # float rounding: space-to-depth, Winograd F(2x2, 2x2), ...; see
  # models/cpu_conv) or "auto": "fast" on the CPU backend of one process,
  # else "plain" (docs/scaling.md, "Multi-process CPU").
  # The parameters are the same, so checkpoints move between them.
  config.model.conv_impl = "auto"
  # Frames per device in each call of a frozen encoder (stage 2, prediction,
  # evaluation); the frames are run in consecutive calls of about this many.
  # 16 keeps XLA CPU's working set in cache (stage 2 is 1.2-1.4x faster
  # than in one call); 0 runs them all in one call. "auto": 16 on the CPU
  # backend, else 0. (Typed object, so that an int may replace "auto".)
  config.model.inference_frames_per_call = ml_collections.FieldReference(
    "auto", field_type=object
  )
  # Activation dtype: "float32", or "bfloat16" (parameters and optimiser
  # state stay float32).
  config.model.dtype = "float32"
  # Hidden width of the mi_critic MLP (512, Sec. IV-A).
  config.model.critic_hidden = 512
  # Hidden width of DRNET's scene_discriminator: 512, the MIPAE reference's
  # `scene_discriminator(pose_dim, nf=512)` (DRNET's own code used 256).
  config.model.scene_discriminator_hidden = 512

  config.loss = ml_collections.ConfigDict()
  # alpha in eq. 5, weight of L_sim (eq. 1). Paper: 1.
  config.loss.sim_weight = 1.0
  # beta in eq. 5, weight of L_MI (eq. 3). Paper: 1e-4.
  config.loss.mi_weight = 1e-4
  # DRNET's weight on the pose encoder's adversarial loss. Reference: 1e-4.
  config.loss.adversarial_weight = 1e-4
  # Which frame's pose eq. 4 decodes with the content of x^t: "offset"
  # (x^{t+k}, the reference implementation and DRNET) or "same" (x^t, eq. 4
  # as printed).
  config.loss.recon_target = "offset"
  # Marginal pairs (eq. 2, 3): "permutation" shuffles the second pose code
  # over the batch (torch.randperm, the reference: about one same-video pair
  # per batch) or "derangement" (never the same video, the paper's wording).
  config.loss.marginal_pairs = "permutation"

  # Adam for the main network and the critic (Sec. IV-A).
  config.learning_rate = 2e-3
  config.adam_b1 = 0.5
  config.adam_b2 = 0.999
  # Global batch, split over the mesh's data axis. Paper: 100.
  config.batch_size = 100
  # 600 steps x 400 epochs (MNIST / dSprites) in the reference.
  config.num_train_steps = 240_000
  # Main-network train steps run in one jitted call (a scan; stage 2 runs
  # one per call); logging, images, saves, preemption and the NaN guard
  # happen between calls. Must divide checkpoint_every_steps. 1: one call
  # per step.
  config.steps_per_call = 1

  config.log_every_steps = 100
  config.image_every_steps = 5_000
  config.checkpoint_every_steps = 5_000
  # Checkpoints kept on disk (older ones are deleted).
  config.keep_checkpoints = 3
  # Checkpoint step training resumes from (-1: the latest). An earlier step
  # (e.g. the one before a corrupt latest checkpoint) moves the later steps
  # to WORKDIR/checkpoints_superseded/; nothing is deleted.
  config.restore_step = -1
  # Call jax.distributed.initialize() before anything else (multi-host).
  config.distributed = False

  # Stage 2: the pose LSTM (Sec. III, eq. 7).
  config.lstm = ml_collections.ConfigDict()
  # Width of the linear input embedding and of each LSTM layer.
  config.lstm.hidden_size = 256
  # Stacked LSTM layers. Paper: 2.
  config.lstm.num_layers = 2
  # Context frames C and predicted frames T during stage-2 training.
  config.lstm.num_context = 5
  config.lstm.num_future = 10
  # Feed ground-truth poses on every step instead of eq. 7's own
  # predictions after the context.
  config.lstm.teacher_forcing = False
  config.lstm.learning_rate = 2e-4
  config.lstm.adam_b1 = 0.9
  config.lstm.batch_size = 100
  config.lstm.num_train_steps = 240_000
  config.lstm.log_every_steps = 100
  config.lstm.image_every_steps = 5_000
  config.lstm.checkpoint_every_steps = 5_000
  # Stage-2 checkpoint step to resume from (-1: the latest), as restore_step.
  config.lstm.restore_step = -1

  # Evaluation (Fig. 5, Table I).
  config.eval = ml_collections.ConfigDict()
  # Context and predicted frames for PSNR / SSIM / LPIPS curves.
  config.eval.num_context = 5
  config.eval.num_future = 30
  config.eval.batch_size = 100
  # Test sequences evaluated (-1: the whole test split).
  config.eval.num_sequences = -1
  # Single frames with known factors used for MIG (eq. 8); reference 100k.
  config.eval.num_mig_frames = 100_000
  # Which frames MIG scores (mipae_jax/evaluation/mig_frames.py): "per_object" (static
  # frames on a support of each object's own factor rows, crossed between
  # objects: an oracle scores >= 0.9, an oracle of one object of two about
  # 0.5), "joint" (a support of joint rows: blind to a model that encodes one
  # object of two), "reference" (the authors' i.i.d. factors; uncalibrated
  # with two sprites), or "video_frames" (frames of test videos, content
  # constant per video: uncalibrated).
  config.eval.mig_protocol = "per_object"
  # Independent frame sets num_mig_frames is split into (seeds of the
  # protocol): MIG is their mean, with a 95 % Student's t interval.
  config.eval.mig_folds = 5
  # LPIPS backbones reported.
  config.eval.lpips_nets = ("alex", "vgg")
  # Checkpoint step to evaluate (-1: latest).
  config.eval.step = -1
  return config


def _schedule(
  node: ml_collections.ConfigDict,
  batch: int,
  steps: int,
  log: int,
  image: int,
  checkpoint: int,
) -> None:
  """Sets a training stage's batch, steps and logging, image and checkpoint
  periods: `config` for the main network, `config.lstm` for the pose LSTM."""
  node.update(
    batch_size=batch,
    num_train_steps=steps,
    log_every_steps=log,
    image_every_steps=image,
    checkpoint_every_steps=checkpoint,
  )


def apply_long_cpu(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The CPU long run (docs/results.md, "Long run"): batch 16, a checkpoint
  every 500 steps (the last 40 kept, about 130 MB each) so that a stopped
  session loses little; resumes where it stopped."""
  config.batch_size = 16
  config.log_every_steps = 100
  config.image_every_steps = 2_000
  config.checkpoint_every_steps = 500
  config.keep_checkpoints = 40
  return config


def apply_reduced(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The reproduction's reduced scale (mipae_jax/experiments/paper.py, REDUCED_RATIONALE):
  same data, batch 16, 6,000 main and 1,200 LSTM steps, a shorter evaluation."""
  _schedule(config, batch=16, steps=6_000, log=100, image=3_000, checkpoint=500)
  _schedule(config.lstm, batch=16, steps=1_200, log=100, image=1_200, checkpoint=300)
  config.eval.update(
    batch_size=50, num_sequences=500, num_mig_frames=20_000, lpips_nets=("alex",)
  )
  return config


def apply_smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The quickstart's scale: long enough for the decoder to draw sprites that
  follow the pose, short enough for MIPAE in about 9 minutes on an idle
  2-core CPU; architectures stay the same."""
  config.dataset.builder_config = f"{config.dataset.builder_config}_small"
  _schedule(config, batch=16, steps=600, log=50, image=300, checkpoint=300)
  _schedule(config.lstm, batch=16, steps=200, log=50, image=200, checkpoint=100)
  config.eval.update(
    batch_size=16,
    num_future=10,
    num_sequences=32,
    num_mig_frames=2_000,
    mig_folds=2,
    lpips_nets=("alex",),
  )
  return config


def apply_tiny(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Seconds per stage on the small dataset's first frames, for tests: its
  256 stored training videos (no rendering per step)."""
  config.dataset.builder_config = f"{config.dataset.builder_config}_small"
  config.dataset.fresh_train_videos = False
  config.dataset.num_frames = 6
  _schedule(config, batch=8, steps=4, log=2, image=4, checkpoint=2)
  _schedule(config.lstm, batch=8, steps=4, log=2, image=4, checkpoint=2)
  config.lstm.update(num_context=3, num_future=4)
  config.eval.update(
    batch_size=8,
    num_future=3,
    num_sequences=8,
    num_mig_frames=200,
    lpips_nets=("alex",),
  )
  return config


def apply_accelerator(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The paper's settings at accelerator speed: the stored train videos held
  on the devices and gathered inside the step, 10 steps per jitted call
  (docs/performance.md, "Accelerators")."""
  config.dataset.fresh_train_videos = False
  config.dataset.placement = "device"
  config.steps_per_call = 10
  return config


def apply_device_check(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """launch/device_check.sh's training on one accelerator: `accelerator` on
  2,000 stored videos, a checkpoint (and a point of the learning curve)
  every 500 steps; training stops when the script's time is up (SIGTERM: a
  save, then exit)."""
  apply_accelerator(config)
  config.dataset.builder_config = f"{config.dataset.builder_config}_2k"
  config.keep_checkpoints = 100
  _schedule(config, batch=100, steps=240_000, log=100, image=1_000, checkpoint=500)
  config.eval.update(num_mig_frames=2_000, mig_folds=2, lpips_nets=("alex",))
  return config


def apply_device_check_smoke(
  config: ml_collections.ConfigDict,
) -> ml_collections.ConfigDict:
  """`device_check.sh --smoke` (its test on CPU): the check's settings on
  the small dataset, batch 8, 6 steps in calls of 2, a checkpoint every 2."""
  apply_device_check(config)
  config.dataset.builder_config = config.dataset.builder_config.replace("_2k", "_small")
  config.dataset.num_frames = 6
  config.steps_per_call = 2
  _schedule(config, batch=8, steps=6, log=2, image=4, checkpoint=2)
  config.eval.update(batch_size=8, num_mig_frames=200, mig_folds=1)
  return config


# Variant name -> the function that applies it to a paper config.
VARIANTS: dict[str, Variant] = {
  "reduced": apply_reduced,
  "smoke": apply_smoke,
  "tiny": apply_tiny,
  "long_cpu": apply_long_cpu,
  "accelerator": apply_accelerator,
  "device_check": apply_device_check,
  "device_check_smoke": apply_device_check_smoke,
}


def apply_variant(
  config: ml_collections.ConfigDict, arg: str | None
) -> ml_collections.ConfigDict:
  """`config` at the variant `arg` of a `--config=FILE.py:arg` (None or "":
  the paper's settings), changed in place.

  Raises:
    ValueError: `arg` names no variant; the message lists them.
  """
  if not arg:
    return config
  if arg not in VARIANTS:
    raise ValueError(
      f"Unknown config variant {arg!r}; expected one of {', '.join(VARIANTS)} or none."
    )
  return VARIANTS[arg](config)
