"""Regression: one number per image (a garment's price, a look's rating) read from a
``--labels_csv`` column, a linear head solved in stage 1 as ridge regression, MSE or Huber loss in
stage 2, and MAE / RMSE / R² beside a predict-the-training-mean baseline."""
from runway_cnn.tasks.regression.task import RegressionOptions, RegressionTask

__all__ = ["RegressionOptions", "RegressionTask"]
