"""Every config key hrnext_d2 adds to Detectron2's defaults, each with what it means.

Sizes follow mmpose's convention where noted: IMAGE_SIZE is (width, height).
"""
from detectron2.config import CfgNode as CN


def _add_backbone_config(cfg: CN) -> None:
    """MODEL.HRNEXT: the HRNeXt backbone (defaults = HRNeXt-S)."""
    cfg.MODEL.HRNEXT = CN()
    # Stem width and stage-1 width (the stem's convs map 3 -> STEM_WIDTH channels, output stride 4).
    cfg.MODEL.HRNEXT.STEM_WIDTH = 64
    # Per stage: NUM_MODULES multi-branch modules, NUM_BRANCHES branches (branch i has stride 4*2^i),
    # NUM_BLOCKS context blocks per branch, NUM_CHANNELS widths, MLP_RATIOS (DFFN hidden = width*ratio),
    # NUM_KERNELS (dynamic-conv kernel count; 1 = plain conv).
    for name, modules, channels, kernels in (
        ("STAGE1", 1, [64], [4]),
        ("STAGE2", 2, [32, 64], [4, 2]),
        ("STAGE3", 4, [32, 64, 128], [4, 2, 1]),
        ("STAGE4", 2, [32, 64, 128, 256], [4, 2, 1, 1]),
    ):
        stage = CN()
        stage.NUM_MODULES = modules
        stage.NUM_BRANCHES = len(channels)
        stage.NUM_BLOCKS = [2] * len(channels)
        stage.NUM_CHANNELS = channels
        stage.MLP_RATIOS = [4] * len(channels)
        stage.NUM_KERNELS = kernels
        setattr(cfg.MODEL.HRNEXT, name, stage)
    # Stochastic depth: rates rise linearly from 0 to this over all blocks of all stages.
    cfg.MODEL.HRNEXT.DROP_PATH_RATE = 0.1
    # Norm for every BatchNorm of the network, through detectron2.layers.get_norm:
    # "BN", "SyncBN", "naiveSyncBN" (works with gloo on the CPU), "FrozenBN".
    cfg.MODEL.HRNEXT.NORM = "BN"
    # Gradient checkpointing of every context block (the reference's with_cp): less memory, ~30% slower.
    cfg.MODEL.HRNEXT.WITH_CP = False
    # False: the last module fuses into branch 0 only (the official pose model; checkpoints load).
    # True: every output branch is fused, so all four strides are available (e.g. for an FPN).
    cfg.MODEL.HRNEXT.MULTI_SCALE_OUTPUT = False
    # Output features by stride: any of "stride4", "stride8", "stride16", "stride32"
    # (all but "stride4" need MULTI_SCALE_OUTPUT True).
    cfg.MODEL.HRNEXT.OUT_FEATURES = ["stride4"]
    # Fast formulations that keep the training form's state dict: the dilated 7x7 depthwise conv as
    # space-to-batch, dynamic 1x1 convs as batched matmuls. False = the reference formulation.
    cfg.MODEL.HRNEXT.FAST_OPS = True
    # Fold eval-mode BatchNorm and layer scales into the preceding convs at inference
    # (applied lazily on the first eval forward; training mode always uses the unfused form).
    cfg.MODEL.HRNEXT.FUSE_INFERENCE = True


def _add_topdown_config(cfg: CN) -> None:
    """MODEL.TOPDOWN: the top-down pose model, its head, codec and test-time behaviour."""
    cfg.MODEL.TOPDOWN = CN()
    # Backbone output the head reads.
    cfg.MODEL.TOPDOWN.IN_FEATURE = "stride4"
    # Crop-level keypoint head (registered in hrnext_d2's TOPDOWN_HEAD_REGISTRY; NUM_KEYPOINTS is
    # MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS).
    cfg.MODEL.TOPDOWN.HEAD = CN()
    cfg.MODEL.TOPDOWN.HEAD.NAME = "TopdownHeatmapSimpleHead"
    # Optional deconv layers before the final conv (0 for HRNeXt), their widths and kernel sizes.
    cfg.MODEL.TOPDOWN.HEAD.NUM_DECONV_LAYERS = 0
    cfg.MODEL.TOPDOWN.HEAD.NUM_DECONV_FILTERS = [256, 256, 256]
    cfg.MODEL.TOPDOWN.HEAD.NUM_DECONV_KERNELS = [4, 4, 4]
    # Kernel size of the final conv that produces the heatmaps.
    cfg.MODEL.TOPDOWN.HEAD.FINAL_CONV_KERNEL = 1
    # Loss: mmpose JointsMSELoss; weighted by target weights; scaled by LOSS_WEIGHT.
    cfg.MODEL.TOPDOWN.HEAD.USE_TARGET_WEIGHT = True
    cfg.MODEL.TOPDOWN.HEAD.LOSS_WEIGHT = 1.0
    # Heatmap codec: Gaussian sigma of the targets (2 at 256x192, 3 at 384x288).
    cfg.MODEL.TOPDOWN.SIGMA = 2.0
    # Decoding: "default" (argmax + quarter offset), "unbiased" (DARK), or "udp".
    cfg.MODEL.TOPDOWN.POST_PROCESS = "default"
    # Gaussian kernel of the DARK blur.
    cfg.MODEL.TOPDOWN.DARK_KERNEL = 11
    # Unbiased data processing (UDP) for encoding and decoding.
    cfg.MODEL.TOPDOWN.USE_UDP = False
    # Box -> crop: boxes are padded to the crop's aspect ratio, then enlarged by this factor.
    cfg.MODEL.TOPDOWN.BOX_PADDING = 1.25
    # Test-time flip: average with the flipped crop's heatmaps; shift those one column right.
    cfg.MODEL.TOPDOWN.FLIP_TEST = True
    cfg.MODEL.TOPDOWN.SHIFT_HEATMAP = True
    # Instance score = box score x mean of keypoint scores above VIS_THR.
    cfg.MODEL.TOPDOWN.VIS_THR = 0.2
    # Per-image OKS-NMS (or soft-OKS-NMS) with this threshold; MAX_DETS caps soft-NMS output.
    cfg.MODEL.TOPDOWN.USE_NMS = True
    cfg.MODEL.TOPDOWN.SOFT_NMS = False
    cfg.MODEL.TOPDOWN.OKS_THR = 0.9
    cfg.MODEL.TOPDOWN.MAX_DETS = 20
    # Keypoint OKS sigmas for NMS and flip pairs (keypoint index pairs) for flip test and training.
    # Empty = from the metadata of the first registered dataset of DATASETS.TRAIN, DATASETS.TEST,
    # else COCO's for 17 keypoints (hrnext_d2.data.datasets.resolve_keypoint_metadata).
    cfg.MODEL.TOPDOWN.OKS_SIGMAS = []
    cfg.MODEL.TOPDOWN.FLIP_PAIRS = []
    # Where inference boxes come from, in order: input `instances` (gt_boxes / pred_boxes + scores)
    # when USE_INPUT_BOXES; else the person detector below when configured; else the whole image.
    cfg.MODEL.TOPDOWN.USE_INPUT_BOXES = True
    cfg.MODEL.TOPDOWN.PERSON_DETECTOR = CN()
    # A Detectron2 detection config file (e.g. a model-zoo Faster R-CNN yaml) and its weights;
    # empty CONFIG_FILE = no detector.
    cfg.MODEL.TOPDOWN.PERSON_DETECTOR.CONFIG_FILE = ""
    cfg.MODEL.TOPDOWN.PERSON_DETECTOR.WEIGHTS = ""
    # Extra KEY VALUE overrides for the detector's config.
    cfg.MODEL.TOPDOWN.PERSON_DETECTOR.OPTS = []
    # Keep detections of this class with at least this score.
    cfg.MODEL.TOPDOWN.PERSON_DETECTOR.PERSON_CLASS = 0
    cfg.MODEL.TOPDOWN.PERSON_DETECTOR.SCORE_THRESH = 0.5
    # Crops per backbone call at inference (bounds memory on crowded images).
    cfg.MODEL.TOPDOWN.CROP_BATCH_SIZE = 64
    # Also return the (flip-averaged) heatmaps as `pred_keypoint_heatmaps`.
    cfg.MODEL.TOPDOWN.RETURN_HEATMAPS = False


def _add_input_config(cfg: CN) -> None:
    """INPUT.TOPDOWN: crops and training augmentation (mmpose 0.23 semantics)."""
    cfg.INPUT.TOPDOWN = CN()
    # Crop size (width, height); heatmaps are 1/4 of it.
    cfg.INPUT.TOPDOWN.IMAGE_SIZE = [192, 256]
    # Horizontal flip probability (with the dataset's keypoint_flip_map).
    cfg.INPUT.TOPDOWN.FLIP_PROB = 0.5
    # Half-body transform: probability, minimum visible keypoints (8 COCO, 6 CrowdPose), and the
    # upper-body keypoint indices (empty = from metadata `keypoint_upper_body_ids`, as OKS_SIGMAS).
    cfg.INPUT.TOPDOWN.HALF_BODY_PROB = 0.3
    cfg.INPUT.TOPDOWN.HALF_BODY_MIN_KEYPOINTS = 8
    cfg.INPUT.TOPDOWN.UPPER_BODY_IDS = []
    # Random scale and rotation (TopDownGetRandomScaleRotation): scale *= clip(1 + SF*N(0,1),
    # 1-SF, 1+SF); rotation clip(RF*N(0,1), -2RF, 2RF) degrees with probability ROT_PROB.
    cfg.INPUT.TOPDOWN.SCALE_FACTOR = 0.5
    cfg.INPUT.TOPDOWN.ROT_FACTOR = 40.0
    cfg.INPUT.TOPDOWN.ROT_PROB = 0.6
    # Box-centre jitter applied once when the training set is built (mmpose 0.23 _xywh2cs).
    cfg.INPUT.TOPDOWN.CENTER_JITTER_PROB = 0.3


def _add_dataset_config(cfg: CN) -> None:
    """DATASETS: where test-time person boxes come from."""
    # "" = the dataset's metadata `test_box_source`; "gt" = ground-truth boxes; or a path to a
    # detections json in COCO results format.
    cfg.DATASETS.TEST_BOXES = ""
    # Detected boxes below this score are dropped (mmpose det_bbox_thr).
    cfg.DATASETS.DET_SCORE_THRESH = 0.0


def _add_solver_config(cfg: CN) -> None:
    """SOLVER extras: AdamW, epoch-based length, no decay on layer scales."""
    # "AdamW" (the paper) or "SGD" (Detectron2's default).
    cfg.SOLVER.OPTIMIZER = "AdamW"
    cfg.SOLVER.BETAS = (0.9, 0.999)
    # When > 0, SOLVER.MAX_ITER = ceil(EPOCHS * training instances / IMS_PER_BATCH).
    cfg.SOLVER.EPOCHS = 0
    # Weight decay on layer scales (the paper: none, like norms and biases).
    cfg.SOLVER.WEIGHT_DECAY_LAYER_SCALE = 0.0
    # When > 0, checkpoint and evaluation periods in epochs (override CHECKPOINT_PERIOD /
    # TEST.EVAL_PERIOD).
    cfg.SOLVER.CHECKPOINT_PERIOD_EPOCHS = 0
    cfg.TEST.EVAL_PERIOD_EPOCHS = 0
    # After training / --eval-only, tools/train_net.py draws the predictions on this many images of
    # DATASETS.TEST[0] into OUTPUT_DIR/visualization and prints the paths (0 = off).
    cfg.TEST.VISUALIZE_NUM = 0
    # Keep the best checkpoint by this metric ("" = off), e.g. "keypoints/AP".
    cfg.SOLVER.BEST_CHECKPOINT_METRIC = "keypoints/AP"


def _add_tracking_config(cfg: CN) -> None:
    """TRACKING: person ids across video frames, detection interval and keypoint smoothing
    (hrnext_d2.engine.VideoPosePredictor, used by tools/demo.py on videos and webcams)."""
    cfg.TRACKING = CN()
    # Give each person an id that persists from frame to frame (drawn as its colour and number).
    cfg.TRACKING.ENABLED = True
    # Association of a frame's persons with the tracks: "oks" (keypoint similarity with the dataset's
    # OKS sigmas, over keypoints scoring >= KEYPOINT_THRESH), "iou" (person boxes), or "oks_iou" (their
    # mean: robust both to noisy boxes and to a pose put on the wrong one of two crossing people).
    # Greedy, best pairs first; a pair below MIN_SIMILARITY never associates.
    cfg.TRACKING.SIMILARITY = "oks_iou"
    cfg.TRACKING.MIN_SIMILARITY = 0.3
    # A track unseen for more than MAX_AGE frames ends; ids are never reused.
    cfg.TRACKING.MAX_AGE = 10
    # Keypoints scoring below this are ignored by the association, the smoother and box propagation.
    cfg.TRACKING.KEYPOINT_THRESH = 0.3
    # Find persons (the box source: detector, detections file or whole image) every DETECT_EVERY
    # frames; in between, each person seen in the previous frame gets the box of its keypoints
    # there (moved by its velocity), enlarged PROPAGATED_BOX_EXPAND times. 1 = detect every frame.
    # A frame with no person to propagate runs detection anyway.
    cfg.TRACKING.DETECT_EVERY = 1
    cfg.TRACKING.PROPAGATED_BOX_EXPAND = 1.25
    # A pose from a propagated box is kept only with at least this fraction of its keypoints
    # scoring >= KEYPOINT_THRESH (else the person is taken to have left; the next detection decides).
    cfg.TRACKING.PROPAGATED_MIN_KEYPOINTS = 0.3
    # One-Euro smoothing of each track's keypoints (hrnext_d2/utils/one_euro.py): cutoff (Hz) =
    # MIN_CUTOFF + BETA * speed in person heights per second; D_CUTOFF (Hz) filters the speed.
    # Lower MIN_CUTOFF = steadier still keypoints; higher BETA = less lag on fast motion.
    cfg.TRACKING.SMOOTHING = CN()
    cfg.TRACKING.SMOOTHING.ENABLED = False
    cfg.TRACKING.SMOOTHING.MIN_CUTOFF = 1.0
    cfg.TRACKING.SMOOTHING.BETA = 5.0
    cfg.TRACKING.SMOOTHING.D_CUTOFF = 1.0


def add_hrnext_config(cfg: CN) -> None:
    """Add every hrnext_d2 key (with its default) to a Detectron2 config, in place."""
    _add_backbone_config(cfg)
    _add_topdown_config(cfg)
    _add_input_config(cfg)
    _add_dataset_config(cfg)
    _add_solver_config(cfg)
    _add_tracking_config(cfg)
