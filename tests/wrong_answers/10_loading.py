"""Plausible wrong answers to chapter 10's exercises (see tests/test_wrong_answers.py)."""

WRONG = {
    "ex-10-1": [
        # every shard opened up front: correct tensors, but nothing lazy about it
        "self.folder = Path(folder)\n"
        "index = self.folder / 'model.safetensors.index.json'\n"
        "if index.exists():\n"
        "    self.where = json.loads(index.read_text())['weight_map']\n"
        "else:\n"
        "    self.where = {name: 'model.safetensors' for name in read_header(self.folder / 'model.safetensors')[1]}\n"
        "self.opened = sorted(set(self.where.values()))\n"
        "self.shards = {shard: open_safetensors(self.folder / shard) for shard in self.opened}\n",
        # only the indexed layout handled: a folder with one model.safetensors looks empty
        "self.folder = Path(folder)\n"
        "index = self.folder / 'model.safetensors.index.json'\n"
        "self.where = json.loads(index.read_text())['weight_map'] if index.exists() else {}\n"
        "self.shards, self.opened = {}, []\n",
    ],
    "ex-10-2": [
        # the dtype argument ignored: the file's own dtype comes back
        "lazy = LazyCheckpoint(folder)\n"
        "prefix = f'model.layers.{i}.'\n"
        "state = {name.removeprefix(prefix): lazy[name] for name in lazy.where if name.startswith(prefix)}\n"
        "layer_config = minicohere.CohereConfig.from_dict(json.loads((Path(folder) / 'config.json').read_text()))\n"
        "with torch.device('meta'):\n"
        "    block = MyDecoderLayer(layer_config, i)\n"
        "block.load_state_dict(state, assign=True)\n"
        "return block.eval()\n",
        # the checkpoint's full names kept: strict=False silences the mismatch and the random weights stay
        "lazy = LazyCheckpoint(folder)\n"
        "prefix = f'model.layers.{i}.'\n"
        "state = {name: lazy[name].to(dtype) for name in lazy.where if name.startswith(prefix)}\n"
        "layer_config = minicohere.CohereConfig.from_dict(json.loads((Path(folder) / 'config.json').read_text()))\n"
        "block = MyDecoderLayer(layer_config, i).to(dtype)\n"
        "block.load_state_dict(state, strict=False)\n"
        "return block.eval()\n",
    ],
    "ex-10-3": [
        # tensors written in the dict's order: a 2-byte tensor can push an 8-byte one off its alignment
        "names = {v: k for k, v in DTYPES.items()}\n"
        "header, chunks, offset = {}, [], 0\n"
        "if metadata:\n"
        "    header['__metadata__'] = {str(k): str(v) for k, v in metadata.items()}\n"
        "for name, t in tensors.items():\n"
        "    data = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()\n"
        "    header[name] = {'dtype': names[t.dtype], 'shape': list(t.shape), 'data_offsets': [offset, offset + len(data)]}\n"
        "    chunks.append(data)\n"
        "    offset += len(data)\n"
        "text = json.dumps(header, separators=(',', ':')).encode()\n"
        "text += b' ' * (-len(text) % 8)\n"
        "with open(path, 'wb') as f:\n"
        "    f.write(struct.pack('<Q', len(text)) + text)\n"
        "    for data in chunks:\n"
        "        f.write(data)\n",
        # the tensors well ordered, but the header not padded: the data starts wherever the JSON ends
        "names = {v: k for k, v in DTYPES.items()}\n"
        "header, chunks, offset = {}, [], 0\n"
        "if metadata:\n"
        "    header['__metadata__'] = {str(k): str(v) for k, v in metadata.items()}\n"
        "for name, t in sorted(tensors.items(), key=lambda item: (-item[1].element_size(), item[0])):\n"
        "    data = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()\n"
        "    header[name] = {'dtype': names[t.dtype], 'shape': list(t.shape), 'data_offsets': [offset, offset + len(data)]}\n"
        "    chunks.append(data)\n"
        "    offset += len(data)\n"
        "text = json.dumps(header, separators=(',', ':')).encode()\n"
        "with open(path, 'wb') as f:\n"
        "    f.write(struct.pack('<Q', len(text)) + text)\n"
        "    for data in chunks:\n"
        "        f.write(data)\n",
    ],
}
