"""TopDownPoseEstimator: golden weights, pinned keypoints on a real image, coordinate conventions,
box sources, NMS, chunking and the training forward."""
import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data.datasets import load_coco_json
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

from hrnext_d2 import add_hrnext_config
from hrnext_d2.checkpoint import convert_mmpose_checkpoint
from hrnext_d2.modeling.heads.heatmap_head import joints_mse_loss
from hrnext_d2.topdown import geometry
from hrnext_d2.topdown.codec import HeatmapCodec
from hrnext_d2.topdown.crops import warp_affine_crops
from hrnext_d2.topdown.pipeline import crop_matrices
from tests.conftest import shared_path
from tests.golden_weights import golden, manifest, official_state_dict
from tests.topdown.mmpose_reference import COCO_FLIP_PAIRS

REPO = Path(__file__).resolve().parents[2]
IMAGE_785_BOX = [280.79, 44.73, 218.7, 346.68]  # test_coco.json, image 785 (XYWH)


def topdown_cfg(config="configs/coco/hrnext_small_coco_256x192.yaml", small=True):
    """A CPU config; `small`: HRNeXt-S widths with one module per stage at 128x96 (fast tests)."""
    cfg = get_cfg()
    add_hrnext_config(cfg)
    cfg.merge_from_file(str(REPO / config))
    cfg.MODEL.DEVICE = "cpu"
    cfg.DATASETS.TRAIN = ()
    cfg.DATASETS.TEST = ()
    if small:
        cfg.INPUT.TOPDOWN.IMAGE_SIZE = [96, 128]
        for stage in ("STAGE2", "STAGE3", "STAGE4"):
            getattr(cfg.MODEL.HRNEXT, stage).NUM_MODULES = 1
    return cfg


def _rgb_input(path, instances=None):
    bgr = cv2.imread(str(path))
    image = torch.as_tensor(np.ascontiguousarray(bgr[:, :, ::-1].transpose(2, 0, 1)))
    inp = {"image": image, "height": bgr.shape[0], "width": bgr.shape[1]}
    if instances is not None:
        inp["instances"] = instances
    return inp


def _boxes_instances(hw, xywh, scores=None, field="gt_boxes"):
    xywh = np.asarray(xywh, dtype=np.float64).reshape(-1, 4)
    inst = Instances(hw)
    setattr(inst, field, Boxes(torch.as_tensor(np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1))))
    if scores is not None:
        inst.scores = torch.as_tensor(scores, dtype=torch.float32)
    return inst


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return build_model(topdown_cfg()).eval()


@pytest.fixture(scope="module")
def golden_s_model(tmp_path_factory):
    """Full HRNeXt-S (256x192, COCO) with the golden seed-0 official weights, loaded from a
    converted checkpoint file through DetectionCheckpointer."""
    sd = official_state_dict(manifest("hrnext_s_coco"), 0)
    folder = tmp_path_factory.mktemp("golden_s")
    torch.save({"state_dict": sd}, folder / "official.pth")
    model = build_model(topdown_cfg(small=False)).eval()
    convert_mmpose_checkpoint(folder / "official.pth", folder / "model.pth", expected=model.state_dict())
    DetectionCheckpointer(model).load(str(folder / "model.pth"))
    return model


def test_golden_forward_crops_matches_reference(golden_s_model):
    ref = golden("golden_hrnext_s_coco_seed0")
    with torch.no_grad():
        out = golden_s_model.forward_crops(ref["input"]).double()
    y = ref["heatmaps_fp64"]
    assert out.shape == y.shape == (2, 17, 64, 48)
    rel = ((out - y).abs().max() / y.abs().max()).item()
    assert rel <= 1e-4, rel


# Golden HRNeXt-S weights (seed 0), image 785 with its ground-truth box, flip test: the model's
# keypoints in Detectron2 coordinates (x, y, score). Pinned from this implementation; they guard the
# whole chain crop -> network -> flip -> decode -> image coordinates against silent changes.
# The model's on-device crop equals cv2.warpAffine's (mmpose's) pixel for pixel, so mmpose's chain
# gives the same keypoints.
PINNED_785 = np.array([
    [388.9473, 145.7808, 0.727156],
    [541.2969, 13.7444, 3.549252],
    [234.9049, 8.6661, 3.250205],
    [385.5617, 203.3351, 0.683628],
    [426.1882, 118.6964, 0.791631],
    [426.1882, 396.3112, 1.055673],
    [478.6642, 428.4739, 0.629030],
    [302.6158, 428.4739, 1.281967],
    [344.9351, 139.0096, 1.336777],
    [524.3691, 23.9011, 2.978726],
    [358.4774, 98.3831, 3.311942],
    [416.0316, 176.2507, 1.093023],
    [412.6461, 206.7206, 0.888560],
    [344.9351, 420.0101, 1.470257],
    [416.0316, 416.6245, 1.925775],
    [399.1039, 308.2870, 1.817566],
    [409.2606, 264.2749, 1.581996],
])  # fmt: skip


def test_pinned_keypoints_golden_weights_on_fixture(golden_s_model):
    root = shared_path("fixtures", "coco", "images")
    inp = _rgb_input(root / "000000000785.jpg", _boxes_instances((425, 640), IMAGE_785_BOX))
    inst = golden_s_model([inp])[0]["instances"]
    assert len(inst) == 1 and inst.image_size == (425, 640)
    kpts = inst.pred_keypoints[0].numpy()
    np.testing.assert_allclose(kpts[:, :2], PINNED_785[:, :2], atol=1e-3)
    np.testing.assert_allclose(kpts[:, 2], PINNED_785[:, 2], atol=1e-4)
    # the box is returned unchanged, the score is box score (1) x mean keypoint score above 0.2
    np.testing.assert_allclose(inst.pred_boxes.tensor[0].numpy(), [280.79, 44.73, 499.49, 391.41], atol=1e-4)
    vis = kpts[:, 2][kpts[:, 2] > 0.2]
    assert inst.scores[0].item() == pytest.approx(vis.mean() if len(vis) else 0.0, rel=1e-6)

    # mmpose's own chain (cv2.warpAffine crop of the RGB image, ToTensor + Normalize, flip test,
    # decode) gives the same keypoints: the on-device crop is cv2's.
    center, scale = geometry.box_xywh_to_center_scale(np.asarray(IMAGE_785_BOX), (192, 256))
    trans = geometry.get_affine_transform(center, scale, 0.0, (192, 256))
    crop = geometry.warp_image(inp["image"].permute(1, 2, 0).numpy(), trans, (192, 256))
    x = torch.from_numpy(crop.transpose(2, 0, 1).astype(np.float32)) / 255.0
    x = (x - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    with torch.no_grad():
        hm = golden_s_model.crop_heatmaps(x[None])
    preds, maxvals = golden_s_model.codec.decode(hm.numpy(), center[None], scale[None])
    np.testing.assert_allclose(preds[0] + 0.5, kpts[:, :2], atol=1e-3)
    np.testing.assert_allclose(maxvals[0, :, 0], kpts[:, 2], atol=1e-4)


def test_ground_truth_through_output_path_gives_raw_coco_numbers(small_model):
    """Heatmaps peaking exactly where the GT keypoints fall decode (via the model's output path and
    Detectron2's instances_to_coco_json) to the raw COCO numbers, up to the heatmap quantisation
    that transform_preds defines; Detectron2-loaded GT keypoints (+0.5) round-trip exactly."""
    root = shared_path("fixtures", "coco")
    raw = json.load(open(root / "annotations" / "test_coco.json"))
    ann = next(a for a in raw["annotations"] if a["image_id"] == 785)
    dicts = load_coco_json(str(root / "annotations" / "test_coco.json"), str(root / "images"))
    d2_kpts = np.asarray(next(d for d in dicts if d["image_id"] == 785)["annotations"][0]["keypoints"]).reshape(17, 3)

    # 1) GT keypoints in Detectron2 convention as pred_keypoints -> exactly the raw json numbers.
    inst = Instances((425, 640))
    inst.pred_boxes = Boxes(torch.tensor([[280.79, 44.73, 499.49, 391.41]]))
    inst.scores = torch.ones(1)
    inst.pred_classes = torch.zeros(1, dtype=torch.int64)
    inst.pred_keypoints = torch.as_tensor(d2_kpts, dtype=torch.float32)[None]
    res = instances_to_coco_json(inst, 785)
    np.testing.assert_allclose(np.asarray(res[0]["keypoints"]).reshape(17, 3)[:, :2],
                               np.asarray(ann["keypoints"]).reshape(17, 3)[:, :2], atol=1e-4)

    # 2) The model's decode path: a peak at the heatmap cell of each GT keypoint (mmpose coordinates
    #    = raw COCO numbers) comes back within half a heatmap cell, and exactly at transform_preds(cell).
    model = small_model
    w, h = model.codec.heatmap_size
    center, scale = geometry.box_xywh_to_center_scale(np.asarray(IMAGE_785_BOX), model.image_size)
    gt = np.asarray(ann["keypoints"], dtype=np.float64).reshape(17, 3)
    labelled = gt[:, 2] > 0
    cell_size = scale * 200 / np.array([w, h])
    hm_xy = (gt[:, :2] - center + scale * 100) / cell_size
    cells = np.round(hm_xy).astype(int)
    heatmaps = np.zeros((1, 17, h, w), np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    for k, (cx, cy) in enumerate(cells):
        heatmaps[0, k] = 0.9 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 8.0)
    out = model.instances_from_heatmaps(
        (425, 640),
        np.array([[280.79, 44.73, 499.49, 391.41]]), np.ones(1), center[None], scale[None],
        torch.from_numpy(heatmaps),
    )
    expected = geometry.transform_preds(cells[None].astype(np.float32), center[None], scale[None], (w, h))[0]
    np.testing.assert_allclose(out.pred_keypoints[0, :, :2].numpy(), expected + 0.5, atol=1e-4)
    coco = np.asarray(instances_to_coco_json(out, 785)[0]["keypoints"]).reshape(17, 3)
    np.testing.assert_allclose(coco[:, :2], expected, atol=1e-4)
    err = np.abs(coco[labelled, :2] - gt[labelled, :2])
    assert np.all(err <= cell_size / 2 + 1e-3)


def test_crop_and_decode_are_one_geometry_also_on_resized_tensors(small_model):
    """A dot drawn at image point P lands, through the model's crop (also when the image tensor is a
    resized copy of the height/width frame), on the crop pixel that decodes back to P."""
    model = small_model
    h_img, w_img = 425, 640
    box = np.asarray(IMAGE_785_BOX)
    center, scale = geometry.box_xywh_to_center_scale(box, model.image_size)
    w, h = model.codec.heatmap_size
    cell = np.array([[13.0, 20.0]], np.float32)  # a heatmap cell -> crop pixel (52, 80)
    p = geometry.transform_preds(cell[None], center[None], scale[None], (w, h))[0, 0]  # mmpose coords
    for scale_factor in (1.0, 0.5):
        th, tw = int(round(h_img * scale_factor)), int(round(w_img * scale_factor))
        image = np.zeros((th, tw), np.float32)
        # dot at P in the resized tensor's pixel grid: x' = (x + 0.5) * s - 0.5
        px, py = (p[0] + 0.5) * tw / w_img - 0.5, (p[1] + 0.5) * th / h_img - 0.5
        cv2.circle(image, (int(round(px)), int(round(py))), 2, 255.0, -1)
        inp = {"image": torch.from_numpy(image)[None].repeat(3, 1, 1), "height": h_img, "width": w_img}
        mats = crop_matrices(center[None], scale[None], model.image_size, False, (h_img, w_img), (th, tw))
        crop = warp_affine_crops(inp["image"], mats, model.image_size)[0, 0].numpy()
        ys, xs = np.nonzero(crop > 0.5 * crop.max())
        weights = crop[ys, xs]
        found = np.array([(xs * weights).sum(), (ys * weights).sum()]) / weights.sum()
        # one tensor pixel = 1/scale_factor image pixels; the crop zoom is 96 / (s_w * 200)
        tol = 1.0 / scale_factor * model.image_size[0] / (scale[0] * 200) + 0.5
        np.testing.assert_allclose(found, cell[0] * 4, atol=tol)


def test_inference_outputs_boxes_sources_and_empty_images(small_model):
    model = small_model
    root = shared_path("fixtures", "coco")
    anns = json.load(open(root / "annotations" / "test_coco.json"))["annotations"]
    boxes = [a["bbox"] for a in anns if a["image_id"] == 40083]
    hw = (333, 500)
    path = root / "images" / "000000040083.jpg"
    with_boxes = _rgb_input(path, _boxes_instances(hw, boxes, [0.9, 0.8, 0.7], field="pred_boxes"))
    whole = _rgb_input(path)
    empty = _rgb_input(path, _boxes_instances(hw, np.zeros((0, 4))))
    out = model([with_boxes, whole, empty])
    inst = out[0]["instances"]
    assert inst.image_size == hw
    assert set(inst.get_fields()) == {"pred_boxes", "scores", "pred_classes", "pred_keypoints"}
    assert 1 <= len(inst) <= 3 and inst.pred_keypoints.shape[1:] == (17, 3)
    assert inst.pred_keypoints.dtype == torch.float32 and torch.all(inst.pred_classes == 0)
    # every output box is one of the input boxes, scores sorted as kept by OKS-NMS
    given = torch.as_tensor([[x, y, x + w, y + h] for x, y, w, h in boxes], dtype=torch.float32)
    for b in inst.pred_boxes.tensor:
        assert torch.isclose(given, b, atol=1e-4).all(1).any()
    assert torch.all(inst.scores[:-1] >= inst.scores[1:])
    # whole-image fallback: one box covering the image
    full = out[1]["instances"]
    assert len(full) == 1
    torch.testing.assert_close(full.pred_boxes.tensor[0], torch.tensor([0.0, 0.0, 500.0, 333.0]))
    # empty box list: empty Instances with every field
    none = out[2]["instances"]
    assert len(none) == 0 and none.pred_keypoints.shape == (0, 17, 3)
    assert set(none.get_fields()) == {"pred_boxes", "scores", "pred_classes", "pred_keypoints"}


def test_nms_chunking_and_heatmap_output():
    cfg = topdown_cfg()
    cfg.MODEL.TOPDOWN.CROP_BATCH_SIZE = 2
    cfg.MODEL.TOPDOWN.RETURN_HEATMAPS = True
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    root = shared_path("fixtures", "coco", "images")
    # the same box three times: identical keypoints (OKS 1 > 0.9) -> OKS-NMS keeps one
    inp = _rgb_input(root / "000000000785.jpg", _boxes_instances((425, 640), [IMAGE_785_BOX] * 3, [0.5, 0.9, 0.7]))
    inst = model([inp])[0]["instances"]
    assert len(inst) == 1
    assert inst.pred_keypoint_heatmaps.shape == (1, 17, 32, 24)
    # no NMS + large chunks: three identical persons, same keypoints as the chunked run
    model.test_settings = dataclasses.replace(model.test_settings, use_nms=False)
    model.crop_batch_size = 64
    inst3 = model([inp])[0]["instances"]
    assert len(inst3) == 3
    torch.testing.assert_close(inst3.pred_keypoints[1], inst.pred_keypoints[0], atol=1e-3, rtol=0)
    # soft-OKS-NMS only reorders and caps at MAX_DETS
    model.test_settings = dataclasses.replace(model.test_settings, use_nms=True, soft_nms=True, max_dets=2)
    assert len(model([inp])[0]["instances"]) == 2
    # rescoring uses each box's own score
    vis = inst3.pred_keypoints[0, :, 2]
    mean_vis = vis[vis > 0.2].mean().item() if (vis > 0.2).any() else 0.0
    torch.testing.assert_close(inst3.scores, torch.tensor([0.5, 0.9, 0.7]) * mean_vis, atol=1e-6, rtol=1e-5)


def test_bgr_input_format_gives_the_same_keypoints(small_model):
    """INPUT.FORMAT BGR (with PIXEL_MEAN/STD in BGR order, as Detectron2 defines them) on a BGR
    tensor computes what the RGB model computes on the RGB tensor."""
    cfg = topdown_cfg()
    cfg.INPUT.FORMAT = "BGR"
    cfg.MODEL.PIXEL_MEAN = cfg.MODEL.PIXEL_MEAN[::-1]
    cfg.MODEL.PIXEL_STD = cfg.MODEL.PIXEL_STD[::-1]
    bgr_model = build_model(cfg).eval()
    bgr_model.load_state_dict(small_model.state_dict())
    path = shared_path("fixtures", "coco", "images", "000000000785.jpg")
    rgb_inp = _rgb_input(path, _boxes_instances((425, 640), IMAGE_785_BOX))
    bgr_inp = dict(rgb_inp, image=rgb_inp["image"].flip(0))
    torch.testing.assert_close(
        bgr_model([bgr_inp])[0]["instances"].pred_keypoints, small_model([rgb_inp])[0]["instances"].pred_keypoints
    )


def test_flip_test_averages_flipped_heatmaps(small_model):
    """With flip test the heatmaps are (orig + flip_back(flipped, shift)) / 2 of the real network."""
    model = small_model
    crops = torch.randn(2, 3, 128, 96)
    with torch.no_grad():
        both = model.crop_heatmaps(crops)
        a = model.forward_crops(crops)
        b = model.forward_crops(crops.flip(3))
    perm = list(range(17))
    for i, j in COCO_FLIP_PAIRS:
        perm[i], perm[j] = j, i
    back = b[:, perm].flip(-1)
    back = torch.cat([back[..., :1], back[..., :-1]], -1)
    torch.testing.assert_close(both, (a + back) * 0.5, atol=1e-5, rtol=1e-4)


def test_training_forward_loss_and_backward():
    cfg = topdown_cfg()
    cfg.MODEL.HRNEXT.DROP_PATH_RATE = 0.0
    torch.manual_seed(0)
    model = build_model(cfg).train()
    codec = HeatmapCodec.from_config(cfg)
    rng = np.random.default_rng(0)
    batch = []
    for _ in range(2):
        joints = np.concatenate([rng.uniform(0, 96, (17, 1)), rng.uniform(0, 128, (17, 1))], 1)
        target, weight = codec.encode(joints, np.ones(17))
        batch.append({
            "image": torch.randint(0, 256, (3, 128, 96), dtype=torch.uint8),
            "target": torch.from_numpy(target), "target_weight": torch.from_numpy(weight),
        })
    losses = model(batch)
    assert set(losses) == {"loss_keypoint"}
    loss = losses["loss_keypoint"]
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert model.keypoint_head.final_layer.weight.grad.abs().sum() > 0
    # without stochastic depth the loss is exactly JointsMSE of forward_crops on the normalised crops
    with torch.no_grad():
        loss = model(batch)["loss_keypoint"]
        crops = (torch.stack([b["image"] for b in batch]).float() - model.pixel_mean) / model.pixel_std
        pred = model.forward_crops(crops)
        ref = joints_mse_loss(pred, torch.stack([b["target"] for b in batch]),
                              torch.stack([b["target_weight"] for b in batch]))
    torch.testing.assert_close(loss, ref)


def test_flip_pairs_and_sigmas_resolution():
    cfg = topdown_cfg()
    model = build_model(cfg)
    assert model.keypoint_info.flip_pairs == ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))
    np.testing.assert_allclose(model.keypoint_info.oks_sigmas, [.026, .025, .025, .035, .035, .079, .079, .072, .072,
                                                  .062, .062, .107, .107, .087, .087, .089, .089])
    # CrowdPose config: 14 keypoints, metadata of its registered test set
    cfg = topdown_cfg("configs/crowdpose/hrnext_small_crowdpose_256x192.yaml")
    cfg.DATASETS.TEST = ("crowdpose_test",)
    model = build_model(cfg)
    assert model.keypoint_info.flip_pairs == ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11))
    assert len(model.keypoint_info.oks_sigmas) == 14 and model.keypoint_info.oks_sigmas[12] == pytest.approx(0.079)
    assert model.keypoint_head.final_layer.out_channels == 14
    # explicit keys win; a wrong sigma count is a clear error
    cfg.MODEL.TOPDOWN.FLIP_PAIRS = [[0, 1]]
    assert build_model(cfg).keypoint_info.flip_pairs == ((0, 1),)
    cfg.MODEL.TOPDOWN.OKS_SIGMAS = [0.1] * 13
    with pytest.raises(ValueError, match="OKS_SIGMAS"):
        build_model(cfg)
    cfg = topdown_cfg("configs/crowdpose/hrnext_small_crowdpose_256x192.yaml")
    with pytest.raises(ValueError, match="NUM_KEYPOINTS=14"):
        build_model(cfg)


def test_ground_truth_heatmaps_through_model_output_and_evaluator_give_ap_100():
    """GT joints -> crop coordinates -> exact sub-pixel Gaussians as the network's heatmaps, then the
    model's own DARK decode / rescoring / NMS / Instances path, instances_to_coco_json and the real
    evaluator: the raw COCO numbers come back to < 0.01 px (a half-pixel convention slip would show
    as 0.5) and AP is 100. The whole chain box -> crop -> decode -> +0.5 -> json is consistent."""
    from detectron2.data import DatasetCatalog

    from hrnext_d2.evaluation.keypoint_evaluator import TopDownKeypointEvaluator
    from tests.data.topdown_fixtures import COCO_FIXTURE, register_fixture_datasets

    register_fixture_datasets()
    cfg = topdown_cfg()
    cfg.MODEL.TOPDOWN.POST_PROCESS = "unbiased"
    model = build_model(cfg).eval()
    w, h = model.codec.heatmap_size
    yy, xx = np.mgrid[0:h, 0:w]
    raw = json.load(open(shared_path("fixtures", "coco", "annotations", "test_coco.json")))["annotations"]
    raw_by_box = {tuple(np.round(a["bbox"], 2)): np.asarray(a["keypoints"], np.float64).reshape(-1, 3) for a in raw}
    evaluator = TopDownKeypointEvaluator(COCO_FIXTURE, distributed=False)
    evaluator.reset()
    errors = []
    for d in DatasetCatalog.get(COCO_FIXTURE):
        persons = [a for a in d["annotations"] if not a.get("iscrowd", 0)]
        xywh = np.array([a["bbox"] for a in persons], dtype=np.float64)
        centers, scales = geometry.box_xywh_to_center_scale(xywh, model.image_size)
        trans = geometry.get_affine_transforms(centers, scales, 0.0, model.image_size)
        heatmaps = np.zeros((len(persons), 17, h, w), np.float32)
        interior = {}
        for i, (a, t) in enumerate(zip(persons, trans)):
            kp = np.asarray(a["keypoints"], dtype=np.float64).reshape(-1, 3)
            hm_xy = geometry.affine_transform_points(kp[:, :2] - 0.5, t) / 4.0  # d2 -> mmpose -> heatmap
            for k in np.nonzero(kp[:, 2] > 0)[0]:
                heatmaps[i, k] = np.exp(-((xx - hm_xy[k, 0]) ** 2 + (yy - hm_xy[k, 1]) ** 2) / (2 * 1.5**2))
            # where DARK refines (argmax in [2, W-3] x [2, H-3]); elsewhere the argmax cell is returned
            inside = (hm_xy[:, 0] > 2.5) & (hm_xy[:, 0] < w - 3.5) & (hm_xy[:, 1] > 2.5) & (hm_xy[:, 1] < h - 3.5)
            interior[tuple(np.round(a["bbox"], 2))] = (kp[:, 2] > 0) & inside
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
        inst = model.instances_from_heatmaps(
            (d["height"], d["width"]), boxes, np.ones(len(boxes)), centers, scales, torch.from_numpy(heatmaps)
        )
        evaluator.process([{"image_id": d["image_id"]}], [{"instances": inst}])
        for res in instances_to_coco_json(inst, d["image_id"]):
            key = tuple(np.round(res["bbox"], 2))  # instances_to_coco_json writes the box as XYWH
            pred = np.asarray(res["keypoints"]).reshape(-1, 3)
            sel = interior[key]
            errors.append(np.abs(pred[sel, :2] - raw_by_box[key][sel, :2]).reshape(-1))
    errors = np.concatenate(errors)
    # DARK is exact on a Gaussian away from the map border (its blur pads with zeros near it)
    assert len(errors) > 150 and np.mean(errors < 0.01) > 0.95 and errors.max() < 0.25, np.sort(errors)[-8:]
    assert evaluator.evaluate()["keypoints"]["AP"] == pytest.approx(100.0)


def test_batched_chunked_inference_equals_one_image_at_a_time(small_model, monkeypatch):
    """Several images in one call, crops made and run CROP_BATCH_SIZE at a time across images, give
    the keypoints of one image at a time in one chunk; no call ever crops more than a chunk."""
    import hrnext_d2.modeling.meta_arch.top_down as top_down

    model = small_model
    root = shared_path("fixtures", "coco")
    anns = json.load(open(root / "annotations" / "test_coco.json"))["annotations"]
    inputs = []
    for image_id, name, hw in ((785, "000000000785.jpg", (425, 640)), (40083, "000000040083.jpg", (333, 500)),
                               (197388, "000000197388.jpg", (392, 640))):
        boxes = [a["bbox"] for a in anns if a["image_id"] == image_id]
        scores = np.linspace(0.9, 0.5, len(boxes))
        inputs.append(_rgb_input(root / "images" / name, _boxes_instances(hw, boxes, scores, field="pred_boxes")))
    assert sum(len(i["instances"]) for i in inputs) >= 8
    one_by_one = [model([inp])[0]["instances"] for inp in inputs]

    sizes = []
    real_warp = top_down.warp_affine_crops
    monkeypatch.setattr(top_down, "warp_affine_crops", lambda img, m, *a, **k: sizes.append(len(m)) or real_warp(img, m, *a, **k))
    model.crop_batch_size = 3
    try:
        batched = [out["instances"] for out in model(inputs)]
    finally:
        model.crop_batch_size = 64
    assert max(sizes) <= 3 and sum(sizes) == sum(len(i["instances"]) for i in inputs)
    for a, b in zip(one_by_one, batched):
        assert len(a) == len(b)
        torch.testing.assert_close(a.pred_keypoints, b.pred_keypoints, atol=1e-4, rtol=0)
        torch.testing.assert_close(a.scores, b.scores, atol=1e-6, rtol=0)
