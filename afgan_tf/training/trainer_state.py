"""The trainer's state <-> checkpoint: what a training checkpoint holds, the Python loop counters <-> their
checkpointed variables, and the weights-only resume (``--resume=PKL|NPZ``).

A mixin of :class:`~afgan_tf.training.trainer.Trainer` (it uses the attributes ``build`` creates: the networks,
optimisers, ``state`` variables, loss, ADA controller, loss scales and augmentation pipe).
"""
import tensorflow as tf


class TrainerState:
    """``checkpoint_objects`` / ``push_state`` / ``pull_state`` / ``load_weights`` of the trainer."""

    def checkpoint_objects(self):
        objs = dict(G=self.G, D=self.D, G_ema=self.G_ema, G_opt=self.G_opt, D_opt=self.D_opt, **self.state)
        objs["pl_mean"] = self.loss.pl_mean
        objs["loss_rng"] = self.loss.rng
        objs["ada"] = self.ada
        for phase, ls in self.loss_scales.items():
            objs[f"loss_scale_{phase}"] = ls
        if self.augment_pipe is not None:
            objs["augment_p"] = self.augment_pipe.p
            if isinstance(getattr(self.augment_pipe, "rng", None), tf.random.Generator):
                objs["augment_rng"] = self.augment_pipe.rng
        return objs

    def push_state(self):
        """Python loop state -> checkpointed variables."""
        st = self.state
        st["step"].assign(self.step)
        st["cur_nimg"].assign(self.cur_nimg)
        st["cur_tick"].assign(self.cur_tick)
        st["tick_start_nimg"].assign(self.tick_start_nimg)

    def pull_state(self):
        """Checkpointed variables -> Python loop state (after a restore)."""
        st = self.state
        if int(st["seed"].numpy()) != self.config.random_seed:
            raise ValueError(f"checkpoint was written with --seed={int(st['seed'].numpy())}, the options say "
                             f"{self.config.random_seed}")
        if int(st["batch_size"].numpy()) != self.batch_size:
            raise ValueError(f"checkpoint was written with --batch={int(st['batch_size'].numpy())}, the options say "
                             f"{self.batch_size}; the data order and EMA would not continue exactly")
        self.step = int(st["step"].numpy())
        self.cur_nimg = int(st["cur_nimg"].numpy())
        self.cur_tick = int(st["cur_tick"].numpy())
        self.tick_start_nimg = int(st["tick_start_nimg"].numpy())

    def load_weights(self, path, networks=None):
        """``--resume=PKL|NPZ``: copy G, D, G_ema weights (buffers included) from a network file (``networks``: the
        file's ``convert.load_network`` result when already read)."""
        from afgan_tf import convert
        nets = networks if networks is not None else convert.load_network(path)
        copied = []
        for key, net in (("G", self.G), ("D", self.D), ("G_ema", self.G_ema)):
            src = nets.get(key) if isinstance(nets, dict) else None
            if src is None:
                continue
            sd = src.original_state_dict() if hasattr(src, "original_state_dict") else src
            net.load_original_state_dict(sd, strict=False)
            copied.append(key)
        if not copied:
            raise ValueError(f"--resume={path}: the file holds none of G, D, G_ema")
        return copied
