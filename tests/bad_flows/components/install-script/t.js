exports.process = async function () {};
