"""AST importers: official and Hugging Face state dicts with their exact keys, round trips, errors,
and (marked `torch`, run by `make test-torch`) our forward pass against a small PyTorch AST."""
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiotl_jax import models
from audiotl_jax.errors import UserError
from audiotl_jax.models import importers

SMALL = dict(width=32, depth=2, num_heads=2, mlp_dim=64)


def _model(num_classes=5, **kw):
  return models.get_model("ast:tiny", num_classes=num_classes, **{**SMALL, **kw})


def _random_params(shapes, seed=0):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(np.float32), shapes)


def _pos(p):
  e = p["embedding"]
  return np.concatenate([e["token_pos_embed"], e["pos_embed"].reshape(1, -1, e["pos_embed"].shape[-1])], 1)


def to_official(p) -> dict:
  """Our params -> the official AST state dict (DataParallel `module.` keys, timm heads)."""
  lin = lambda d: (d["kernel"].T, d["bias"])
  sd = {"module.v.cls_token": p["embedding"]["cls_token"],
        "module.v.dist_token": p["embedding"]["dist_token"], "module.v.pos_embed": _pos(p),
        "module.v.patch_embed.proj.weight": p["embedding"]["proj"]["kernel"].transpose(3, 2, 0, 1),
        "module.v.patch_embed.proj.bias": p["embedding"]["proj"]["bias"],
        "module.v.norm.weight": p["encoder_norm"]["scale"], "module.v.norm.bias": p["encoder_norm"]["bias"],
        "module.mlp_head.0.weight": p["head"]["norm"]["scale"],
        "module.mlp_head.0.bias": p["head"]["norm"]["bias"]}
  sd["module.mlp_head.1.weight"], sd["module.mlp_head.1.bias"] = lin(p["head"]["dense"])
  width = p["encoder_norm"]["scale"].shape[0]
  sd["module.v.head.weight"], sd["module.v.head.bias"] = np.zeros((1000, width)), np.zeros(1000)
  sd["module.v.head_dist.weight"], sd["module.v.head_dist.bias"] = np.zeros((1000, width)), np.zeros(1000)
  i = 0
  while f"block{i + 1}" in p:
    b, k = p[f"block{i + 1}"], f"module.v.blocks.{i}."
    for n in ("norm1", "norm2"):
      sd[k + n + ".weight"], sd[k + n + ".bias"] = b[n]["scale"], b[n]["bias"]
    a = b["attn"]
    sd[k + "attn.qkv.weight"] = np.concatenate([a[n]["kernel"].T for n in ("query", "key", "value")])
    sd[k + "attn.qkv.bias"] = np.concatenate([a[n]["bias"] for n in ("query", "key", "value")])
    sd[k + "attn.proj.weight"], sd[k + "attn.proj.bias"] = lin(a["out"])
    sd[k + "mlp.fc1.weight"], sd[k + "mlp.fc1.bias"] = lin(b["fc1"])
    sd[k + "mlp.fc2.weight"], sd[k + "mlp.fc2.bias"] = lin(b["fc2"])
    i += 1
  return sd


def to_huggingface(p, root="audio_spectrogram_transformer.") -> dict:
  """Our params -> `ASTForAudioClassification` keys (root "" and no classifier: `ASTModel`)."""
  lin = lambda d: (d["kernel"].T, d["bias"])
  e = root + "embeddings."
  sd = {e + "cls_token": p["embedding"]["cls_token"],
        e + "distillation_token": p["embedding"]["dist_token"], e + "position_embeddings": _pos(p),
        e + "patch_embeddings.projection.weight": p["embedding"]["proj"]["kernel"].transpose(3, 2, 0, 1),
        e + "patch_embeddings.projection.bias": p["embedding"]["proj"]["bias"],
        root + "layernorm.weight": p["encoder_norm"]["scale"],
        root + "layernorm.bias": p["encoder_norm"]["bias"]}
  if root:
    sd["classifier.layernorm.weight"] = p["head"]["norm"]["scale"]
    sd["classifier.layernorm.bias"] = p["head"]["norm"]["bias"]
    sd["classifier.dense.weight"], sd["classifier.dense.bias"] = lin(p["head"]["dense"])
  i = 0
  while f"block{i + 1}" in p:
    b, k = p[f"block{i + 1}"], f"{root}encoder.layer.{i}."
    sd[k + "layernorm_before.weight"], sd[k + "layernorm_before.bias"] = b["norm1"]["scale"], b["norm1"]["bias"]
    sd[k + "layernorm_after.weight"], sd[k + "layernorm_after.bias"] = b["norm2"]["scale"], b["norm2"]["bias"]
    for n in ("query", "key", "value"):
      sd[f"{k}attention.attention.{n}.weight"], sd[f"{k}attention.attention.{n}.bias"] = lin(b["attn"][n])
    sd[k + "attention.output.dense.weight"], sd[k + "attention.output.dense.bias"] = lin(b["attn"]["out"])
    sd[k + "intermediate.dense.weight"], sd[k + "intermediate.dense.bias"] = lin(b["fc1"])
    sd[k + "output.dense.weight"], sd[k + "output.dense.bias"] = lin(b["fc2"])
    i += 1
  return sd


def _equal(a, b):
  fa, fb = (flax.traverse_util.flatten_dict(t, sep="/") for t in (a, b))
  assert set(fa) == set(fb)
  for k in fa:
    np.testing.assert_array_equal(np.asarray(fa[k]), np.asarray(fb[k]), err_msg=k)


@pytest.mark.parametrize("layout", ["official", "hf_classifier", "hf_model"])
def test_round_trip(layout):
  shapes = models.param_shapes(_model(), frames=64, mel_bins=32)["params"]
  params = _random_params(shapes)
  sd = {"official": to_official, "hf_classifier": to_huggingface,
        "hf_model": lambda p: to_huggingface(p, root="")}[layout](params)
  got, notes = importers.convert(sd, shapes)
  if layout == "hf_model":  # ASTModel has no classifier: the head stays fresh.
    assert "head" not in got and any("head left fresh" in n for n in notes)
    params = {k: v for k, v in params.items() if k != "head"}
  if layout == "official":
    assert any("timm's unused heads" in n for n in notes)
  _equal(got, params)


def test_safetensors_file(tmp_path):
  from safetensors.numpy import save_file
  shapes = models.param_shapes(_model(), frames=64, mel_bins=32)["params"]
  params = _random_params(shapes, seed=1)
  save_file({k: np.ascontiguousarray(v) for k, v in to_huggingface(params).items()},
            str(tmp_path / "model.safetensors"))
  got, _ = importers.import_ast(tmp_path / "model.safetensors", _model(), frames=64, mel_bins=32)
  _equal(got, params)


def test_full_size_key_names_and_shapes():
  """AST-base (1212 patches, 527 classes) in both layouts, built without allocating: every key
  maps and every shape checks; the 10-second checkpoint then serves 500-frame inputs."""
  model = models.get_model("ast:base", num_classes=527)
  shapes = models.param_shapes(model, frames=1024, mel_bins=128)["params"]
  zeros = jax.tree.map(lambda s: np.broadcast_to(np.float32(0), s.shape), shapes)
  sd = to_official(zeros)
  assert sd["module.v.pos_embed"].shape == (1, 1214, 768)
  assert sd["module.v.blocks.11.attn.qkv.weight"].shape == (2304, 768)
  assert sd["module.mlp_head.1.weight"].shape == (527, 768)
  got, _ = importers.convert(sd, shapes)
  assert models.count_params(got) == 86_594_063
  short = models.param_shapes(model, frames=500, mel_bins=128)["params"]
  got, notes = importers.convert(to_huggingface(zeros), short)
  assert got["embedding"]["pos_embed"].shape == (1, 12, 49, 768)
  assert any("12x101 -> 12x49" in n for n in notes)


def test_errors_name_the_first_mismatch():
  shapes = models.param_shapes(_model(), frames=64, mel_bins=32)["params"]
  sd = to_official(_random_params(shapes))
  bad = dict(sd, **{"module.v.blocks.1.mlp.fc1.weight": np.zeros((65, 32), np.float32)})
  with pytest.raises(UserError, match=r"'block2/fc1/kernel'.*\(32, 65\).*\(32, 64\)"):
    importers.convert(bad, shapes)
  with pytest.raises(UserError, match="lacks key 'module.v.norm.weight'"):
    importers.convert({k: v for k, v in sd.items() if k != "module.v.norm.weight"}, shapes)
  with pytest.raises(UserError, match="unexpected keys.*module.v.extra"):
    importers.convert(dict(sd, **{"module.v.extra": np.zeros(1)}), shapes)
  deeper = models.param_shapes(_model(depth=3), frames=64, mel_bins=32)["params"]
  with pytest.raises(UserError, match="nothing for parameter 'block3/"):
    importers.convert(sd, deeper)
  with pytest.raises(UserError, match="not an AST state dict"):
    importers.convert({"weight": np.zeros(2)}, shapes)
  with pytest.raises(UserError, match="does not exist"):
    importers.read_state_dict("/nonexistent/ast.pth")


def _torch_ast(torch, width, depth, heads, mlp, num_classes, fstride=10, tstride=10):
  """A small AST written as the official code (timm DeiT blocks, fused qkv, mean of cls/dist)."""
  nn = torch.nn

  class Block(nn.Module):
    def __init__(self):
      super().__init__()
      self.norm1, self.norm2 = nn.LayerNorm(width, eps=1e-6), nn.LayerNorm(width, eps=1e-6)
      self.attn = nn.Module()
      self.attn.qkv, self.attn.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
      self.mlp = nn.Module()
      self.mlp.fc1, self.mlp.fc2 = nn.Linear(width, mlp), nn.Linear(mlp, width)

    def forward(self, x):
      b, n, c = x.shape
      qkv = self.attn.qkv(self.norm1(x)).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
      q, k, v = qkv[0], qkv[1], qkv[2]
      a = ((q @ k.transpose(-2, -1)) * (c // heads) ** -0.5).softmax(-1)
      x = x + self.attn.proj((a @ v).transpose(1, 2).reshape(b, n, c))
      return x + self.mlp.fc2(nn.functional.gelu(self.mlp.fc1(self.norm2(x))))

  class V(nn.Module):
    def __init__(self, num_patches):
      super().__init__()
      self.cls_token = nn.Parameter(torch.randn(1, 1, width))
      self.dist_token = nn.Parameter(torch.randn(1, 1, width))
      self.pos_embed = nn.Parameter(torch.randn(1, num_patches + 2, width))
      self.patch_embed = nn.Module()
      self.patch_embed.proj = nn.Conv2d(1, width, 16, stride=(fstride, tstride))
      self.blocks = nn.ModuleList([Block() for _ in range(depth)])
      self.norm = nn.LayerNorm(width, eps=1e-6)

  class Ast(nn.Module):
    def __init__(self, frames, bins):
      super().__init__()
      f, t = (bins - 16) // fstride + 1, (frames - 16) // tstride + 1
      self.v = V(f * t)
      self.mlp_head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, num_classes))

    def forward(self, x):  # (batch, frames, bins), as the official ASTModel.forward
      x = self.v.patch_embed.proj(x.unsqueeze(1).transpose(2, 3)).flatten(2).transpose(1, 2)
      b = x.shape[0]
      x = torch.cat([self.v.cls_token.expand(b, -1, -1), self.v.dist_token.expand(b, -1, -1), x], 1)
      x = x + self.v.pos_embed
      for blk in self.v.blocks:
        x = blk(x)
      x = self.v.norm(x)
      return self.mlp_head((x[:, 0] + x[:, 1]) / 2)

  return Ast


@pytest.mark.torch  # `make test-torch`; fails without torch there, deselected by default
def test_forward_matches_pytorch_ast():
  import torch
  torch.manual_seed(0)
  frames, bins = 64, 32
  net = _torch_ast(torch, 32, 2, 2, 64, 5)(frames, bins).eval()
  for m in net.modules():  # LayerNorm's default affine (1, 0) would hide a transposed import.
    if isinstance(m, torch.nn.LayerNorm):
      torch.nn.init.normal_(m.weight, 1.0, 0.2)
      torch.nn.init.normal_(m.bias, 0.0, 0.2)
  sd = {"module." + k: v.detach().numpy() for k, v in net.state_dict().items()}
  model = _model()
  shapes = models.param_shapes(model, frames=frames, mel_bins=bins)["params"]
  params, _ = importers.convert(sd, shapes)
  x = np.random.default_rng(0).standard_normal((3, frames, bins)).astype(np.float32)
  with torch.no_grad():
    ref = net(torch.from_numpy(x)).numpy()
  got = np.asarray(model.apply({"params": params}, jnp.asarray(x), train=False)[0])
  np.testing.assert_allclose(got, ref, atol=2e-4, rtol=1e-4)


@pytest.mark.torch
def test_reads_a_torch_pth(tmp_path):
  import torch
  shapes = models.param_shapes(_model(), frames=64, mel_bins=32)["params"]
  params = _random_params(shapes, seed=2)
  torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in to_official(params).items()},
             tmp_path / "audioset.pth")
  got, notes = importers.import_ast(tmp_path / "audioset.pth", _model(), frames=64, mel_bins=32)
  _equal(got, params)
