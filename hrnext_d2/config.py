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
    # "BN", "SyncBN", "nnSyncBN", "naiveSyncBN" (works with gloo on the CPU), "FrozenBN", or
    # "CPUSyncBN" (ours: synchronised over CPU processes with BatchNorm's running statistics, i.e. those
    # of one process training the global batch). With several processes the trainer turns "BN" into
    # "SyncBN" on CUDA and "BN"/"SyncBN"/"nnSyncBN" into "CPUSyncBN" on the CPU; with one, any sync BN
    # into "BN".
    cfg.MODEL.HRNEXT.NORM = "BN"
    # Gradient checkpointing of every context block (the reference's with_cp): less memory, ~30% slower.
    # The recomputation in backward leaves BatchNorm statistics alone (updated once per step, as without).
    cfg.MODEL.HRNEXT.WITH_CP = False
    # False: the last module fuses into branch 0 only (the official pose model; checkpoints load).
    # True: the last module also fuses into the branches of OUT_FEATURES, so all four strides are
    # available; fuse layers of branches not in OUT_FEATURES are not built (they would get no
    # gradient, which DistributedDataParallel refuses). The FPN backbones (build_hrnext_fpn_backbone,
    # build_retinanet_hrnext_fpn_backbone) take it as True whenever MODEL.FPN.IN_FEATURES reads a
    # branch other than stride 4.
    cfg.MODEL.HRNEXT.MULTI_SCALE_OUTPUT = False
    # Output features of build_hrnext_backbone by stride: any of "stride4", "stride8", "stride16",
    # "stride32" (all but "stride4" need MULTI_SCALE_OUTPUT True). The FPN backbones read
    # MODEL.FPN.IN_FEATURES instead, where "res2".."res5" also name these four branches.
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
    # Persons per backbone call at inference (with FLIP_TEST the call also holds their flipped crops).
    # Crops are made, run and decoded this many at a time across the images of a test batch, so
    # memory is bounded by it, not by the number of boxes.
    cfg.MODEL.TOPDOWN.CROP_BATCH_SIZE = 64
    # Also return the (flip-averaged) heatmaps as `pred_keypoint_heatmaps`.
    cfg.MODEL.TOPDOWN.RETURN_HEATMAPS = False


def _add_roi_keypoint_head_config(cfg: CN) -> None:
    """MODEL.ROI_KEYPOINT_HEAD.HRNEXT: HRNeXtKeypointHead, the Keypoint R-CNN head of HRNeXt blocks
    (MODEL.ROI_KEYPOINT_HEAD.NAME "HRNeXtKeypointHead"; NUM_KEYPOINTS, LOSS_WEIGHT,
    NORMALIZE_LOSS_BY_VISIBLE_KEYPOINTS and POOLER_SAMPLING_RATIO are Detectron2's keys)."""
    h = cfg.MODEL.ROI_KEYPOINT_HEAD.HRNEXT = CN()
    # (height, width) of the ROI features when the head pools them itself, which it does when
    # MODEL.ROI_KEYPOINT_HEAD.POOLER_TYPE is "" (with a pooler type set, Detectron2 pools square
    # POOLER_RESOLUTION features of the raw boxes, and POOLER_RESOLUTION, POOLER_TYPE and BOX_PADDING
    # below are not used).
    # [16, 12] is the top-down 256x192 aspect; heatmaps are 4x this size (64x48) with UP_SCALE 2.
    h.POOLER_RESOLUTION = [16, 12]
    # Pooler of the head: "ROIAlignV2", "ROIAlign" or "ROIPool" (Detectron2's ROIPooler types).
    h.POOLER_TYPE = "ROIAlignV2"
    # Each box is padded to the pooled aspect (width / height), then enlarged by this factor about
    # its centre, as top-down crops are (MODEL.TOPDOWN.BOX_PADDING); targets and decoding use it.
    h.BOX_PADDING = 1.25
    # Width of the context blocks (a 1x1 conv + norm + GELU projects the ROI features to it).
    h.CHANNELS = 128
    # Number of HRNeXt context blocks (HighResolutionContextBlock), then HRNeXt's LayerNorm.
    h.NUM_BLOCKS = 2
    # DFFN hidden width = CHANNELS * MLP_RATIO.
    h.MLP_RATIO = 4.0
    # Dynamic-conv kernels of the blocks (1 = static convs; > 1 with "BN" needs >= 2 ROIs per step).
    h.NUM_KERNELS = 1
    # Norm of the projection and the blocks (get_norm: "BN", "GN", "SyncBN", ...; not empty).
    h.NORM = "BN"
    # Bilinear upsampling after the stride-2 deconvolution to the heatmaps (Detectron2's is 2).
    h.UP_SCALE = 2.0
    # "cross_entropy": Detectron2's Keypoint R-CNN loss (spatial softmax, one-hot targets; keypoint
    # scores are Detectron2's softmax scores); "gaussian_mse": squared error to Gaussian targets of
    # GAUSSIAN_SIGMA heatmap pixels, summed over the heatmap (scores are the heatmap peaks). Both
    # are normalised as Detectron2's (NORMALIZE_LOSS_BY_VISIBLE_KEYPOINTS) and scaled by LOSS_WEIGHT.
    h.LOSS = "cross_entropy"
    h.GAUSSIAN_SIGMA = 2.0


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
    # detections json in COCO results format. A detections file is checked when a run starts
    # (before training): no image id of the test set in it is an error, a partial match a warning.
    cfg.DATASETS.TEST_BOXES = ""
    # Detected boxes below this score are dropped (mmpose det_bbox_thr).
    cfg.DATASETS.DET_SCORE_THRESH = 0.0
    # The detections' category_id kept as persons (COCO: 1). Entries without a category_id are kept;
    # a file whose entries carry category ids but none equal to this one is an error.
    cfg.DATASETS.DET_CATEGORY_ID = 1


def _add_dataloader_config(cfg: CN) -> None:
    """DATALOADER: what an unreadable training image does."""
    # False: an unreadable (missing, truncated, corrupt) training image stops training with the file
    # named. True: the sample is replaced by the next readable one of the training set (the same one
    # in every run, so resuming stays exact) and the skips are counted in the log every 20 iterations
    # and at the end. tools/check_dataset.py finds such images before a run.
    cfg.DATALOADER.SKIP_UNREADABLE_IMAGES = False


def _add_solver_config(cfg: CN) -> None:
    """SOLVER extras: AdamW, epoch-based length, no decay on layer scales."""
    # "AdamW" (the paper; configs/Base-TopDown.yaml) or "SGD" (the default, as Detectron2's own
    # configs, e.g. its R-CNN ones, expect).
    cfg.SOLVER.OPTIMIZER = "SGD"
    cfg.SOLVER.BETAS = (0.9, 0.999)
    # When > 0, SOLVER.MAX_ITER = ceil(EPOCHS * training instances / IMS_PER_BATCH).
    cfg.SOLVER.EPOCHS = 0
    # Weight decay on layer scales (the paper: none, like norms and biases).
    cfg.SOLVER.WEIGHT_DECAY_LAYER_SCALE = 0.0
    # When > 0, checkpoint and evaluation periods in epochs (override CHECKPOINT_PERIOD /
    # TEST.EVAL_PERIOD).
    cfg.SOLVER.CHECKPOINT_PERIOD_EPOCHS = 0
    cfg.TEST.EVAL_PERIOD_EPOCHS = 0
    # Images per test batch of the top-down test loader (--eval-only, evaluation during training,
    # inference_on_dataset): their persons share backbone calls.
    cfg.TEST.IMS_PER_BATCH = 8
    # After training / --eval-only, tools/train_net.py draws the predictions on this many images of
    # DATASETS.TEST[0] into OUTPUT_DIR/visualization and prints the paths (0 = off).
    cfg.TEST.VISUALIZE_NUM = 0
    # Keep the best checkpoint by this metric ("" = off), e.g. "keypoints/AP".
    cfg.SOLVER.BEST_CHECKPOINT_METRIC = "keypoints/AP"
    # DistributedDataParallel: allow parameters that get no gradient (e.g. backbone OUT_FEATURES the
    # head does not read). Off by default: the search for them costs time every iteration, and the
    # trainer names such outputs before training when it is off.
    cfg.SOLVER.DDP = CN()
    cfg.SOLVER.DDP.FIND_UNUSED_PARAMETERS = False


def _add_weights_config(cfg: CN) -> None:
    """MODEL.WEIGHTS_*: how MODEL.WEIGHTS (and resumed checkpoints) are loaded."""
    # Loading is strict: a tensor missing from the file, a file tensor the model lacks, or a shape
    # that differs is an error naming the file and the keys. Keys starting with one of these
    # prefixes may differ and keep their initialisation, with a warning: e.g. ["keypoint_head."] to
    # fine-tune from a model trained on another dataset's keypoints; [""] allows any key
    # (Detectron2's behaviour: load what fits).
    cfg.MODEL.WEIGHTS_PARTIAL_LOAD = []
    # Files that need full unpickling (.pkl / .pickle, or a .pth holding Python objects) run any code
    # they contain when read: refused unless True. Set it only for files you trust.
    cfg.MODEL.WEIGHTS_ALLOW_PICKLE = False


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
    _add_roi_keypoint_head_config(cfg)
    _add_input_config(cfg)
    _add_dataset_config(cfg)
    _add_dataloader_config(cfg)
    _add_solver_config(cfg)
    _add_weights_config(cfg)
    _add_tracking_config(cfg)
