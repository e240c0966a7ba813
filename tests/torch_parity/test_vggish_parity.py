"""VGGish against a PyTorch re-creation of torchvggish (`make test-torch`).

The reference is torchvggish's VGG rebuilt here in PyTorch (a Sequential of 3x3 convs + ReLU with
max pools, the conv map flattened in NHWC order, three Linear + ReLU) fed by mel_features'
numpy pipeline (`test_vggish.reference_examples`), with random weights saved as a state dict and
imported through `audiotl import`; the post-processing is the Postprocessor's arithmetic in torch.
Everything starts from the same int16 waveform.
"""
import fractions

import jax
import numpy as np
import pytest
import torch  # a plain import: without torch these tests fail rather than skip

from audiotl_jax import models
from audiotl_jax.cli import main as cli
from audiotl_jax.errors import UserError
from audiotl_jax.features import featurizer
from audiotl_jax.features import vggish as vggish_features
from audiotl_jax.models import import_vggish
from audiotl_jax.train import inference
from test_vggish import reference_examples

pytestmark = pytest.mark.torch

BASE = dict(channels=(64, 128, 256, 512), convs=(1, 1, 2, 2), fc=(4096, 4096, 128))
TINY = dict(channels=(8, 16, 16, 32), convs=(1, 1, 2, 2), fc=(32, 32, 16))


class TorchVggish(torch.nn.Module):
  """torchvggish's VGG: `features` (conv, ReLU per conv; a max pool per block) and `embeddings`."""

  def __init__(self, channels, convs, fc):
    super().__init__()
    layers, width = [], 1
    for c, k in zip(channels, convs):
      for _ in range(k):
        layers += [torch.nn.Conv2d(width, c, 3, padding=1), torch.nn.ReLU()]
        width = c
      layers.append(torch.nn.MaxPool2d(2, 2))
    self.features = torch.nn.Sequential(*layers)
    dims = (width * 6 * 4, *fc)
    fcs = []
    for a, b in zip(dims[:-1], dims[1:]):
      fcs += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    self.embeddings = torch.nn.Sequential(*fcs)

  def forward(self, x):  # (examples, 1, 96, 64)
    x = self.features(x).permute(0, 2, 3, 1).contiguous()  # NCHW -> NHWC, as torchvggish
    return self.embeddings(x.reshape(x.shape[0], -1))


def postprocessor(emb, vectors, means):
  """torchvggish's Postprocessor.postprocess: PCA on column vectors, clamp, 8-bit round."""
  pca = torch.mm(vectors, emb.t() - means.reshape(-1, 1)).t()
  return pca, torch.round((torch.clamp(pca, -2.0, 2.0) + 2.0) * (255.0 / 4.0))


def _audio(seconds, seed):
  rng = np.random.default_rng(seed)
  n = int(seconds * 16000)
  t = np.arange(n) / 16000
  wave = 0.2 * np.sin(2 * np.pi * (300 + 200 * seed) * t) + 0.05 * rng.standard_normal(n)
  return np.clip(np.round(wave * 32768), -32768, 32767).astype(np.int16)


def _reference(net, audio):
  """The official path: int16 / 32768 -> mel_features examples -> VGG; (clips, examples, dim)."""
  with torch.no_grad():
    return np.stack([net(torch.tensor(reference_examples(a / 32768.0)[:, None],
                                      dtype=torch.float32)).numpy() for a in audio])


def _close(got, want, rel=1e-3):
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  assert np.mean(want != 0) > 0.2, "the reference is mostly zeros: a vacuous comparison"
  err = np.abs(got - want).max() / max(np.abs(want).max(), 1e-12)
  assert err < rel, f"max error {err:.2e} of the largest value (limit {rel:g})"
  return err


def _save_numpy_pickle(path, arrays, *, legacy=False, numpy1_names=False):
  """The release's PCA file: numpy arrays pickled by torch.save (2019: numpy 1, old format)."""
  torch.save(arrays, str(path), _use_new_zipfile_serialization=not legacy)
  if numpy1_names:  # the module numpy 1 pickled `_reconstruct` under
    if legacy:
      data = path.read_bytes().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
      path.write_bytes(data)
    else:
      import zipfile
      with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
      with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for n, data in members.items():
          if n.endswith("data.pkl"):
            data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
          z.writestr(n, data)


def test_tiny_import_stage_parity_with_postprocessing(tmp_path):
  torch.manual_seed(0)
  net = TorchVggish(**TINY).eval()
  torch.save(net.state_dict(), tmp_path / "vggish.pth")
  rng = np.random.default_rng(1)
  vectors, means = rng.normal(0, 0.4, (16, 16)), rng.normal(0, 0.3, 16)
  _save_numpy_pickle(tmp_path / "pca.pth", {"pca_eigen_vectors": vectors, "pca_means": means},
                     legacy=True, numpy1_names=True)
  out = tmp_path / "imported"
  assert cli(["import", "--weights", str(tmp_path / "vggish.pth"), "--pca",
              str(tmp_path / "pca.pth"), "--model", "vggish:tiny", "--workdir", str(out)]) == 0

  audio = np.stack([_audio(3.5, 0), _audio(3.5, 1)])  # 3 whole examples each, a tail dropped
  want = _reference(net, audio)
  inf = inference.load_for_inference(out)
  _, layers = jax.jit(lambda v, a: inf.model.apply(v, inf.featurize(a), train=False))(
      inf.variables, audio)
  assert layers["example_embeddings"].shape == want.shape == (2, 3, 16)
  err = _close(layers["example_embeddings"], want)
  _close(layers["embedding"], want.mean(1))
  np.testing.assert_array_equal(layers["logits"], layers["embedding"])  # identity head

  t = lambda a: torch.tensor(np.asarray(a), dtype=torch.float32)
  pca, quantized = postprocessor(t(want.reshape(-1, 16)), t(vectors), t(means))
  pca_err = _close(np.asarray(layers["example_embeddings_pca"]).reshape(-1, 16), pca.numpy())
  got_q = np.asarray(layers["example_embeddings_quantized"], np.int32).reshape(-1, 16)
  assert np.abs(got_q - quantized.numpy()).max() <= 1
  assert np.mean(got_q == quantized.numpy()) > 0.98
  print(f"vggish:tiny: example embeddings max error {err:.2e}, PCA {pca_err:.2e} of the largest "
        f"value; quantised equal {np.mean(got_q == quantized.numpy()):.4f}")


@pytest.mark.parametrize("legacy,numpy1_names", [(False, False), (False, True), (True, False)])
def test_pca_file_formats(tmp_path, legacy, numpy1_names):
  arrays = {"pca_eigen_vectors": np.eye(128), "pca_means": np.arange(128.0)}
  _save_numpy_pickle(tmp_path / "pca.pth", arrays, legacy=legacy, numpy1_names=numpy1_names)
  got = import_vggish.read_pca(tmp_path / "pca.pth")
  np.testing.assert_array_equal(got["pca_means"], arrays["pca_means"])
  # Any other global is still refused: the file cannot make the loader call arbitrary code.
  torch.save({"pca_means": fractions.Fraction(1, 3)}, str(tmp_path / "other.pth"))
  with pytest.raises(UserError, match="not a readable PyTorch pickle"):
    import_vggish.read_pca(tmp_path / "other.pth")


def test_base_parity_on_random_weights():
  torch.manual_seed(1)
  net = TorchVggish(**BASE).eval()
  sd = {k: v.numpy() for k, v in net.state_dict().items()}
  model = models.get_model("vggish:base", num_classes=128)
  variables, _ = import_vggish.import_vggish(sd, model)
  audio = np.stack([_audio(2.0, 2)])
  want = _reference(net, audio)
  featurize = featurizer.make_featurizer(vggish_features.frontend_config(), None)
  _, layers = jax.jit(lambda v, a: model.apply(v, featurize(a), train=False))(variables, audio)
  err = _close(layers["example_embeddings"], want)
  print(f"vggish:base example embeddings: max error {err:.2e} of the largest value")
