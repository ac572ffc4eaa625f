exports.process = () => {};
